// The static entry program at the start of dist/mke (docs/payload.md). Built in docker
// mode by build/bundle/entry.py; go.sum pins its one dependency.
module mke.build/entry

go 1.26

require github.com/klauspost/compress v1.20.4
