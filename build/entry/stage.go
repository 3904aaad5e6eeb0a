package main

// Staging the runtime: once per runtime id, under a lock, verified, all or nothing.

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/klauspost/compress/zstd"
)

const (
	tmpPrefix     = ".tmp-"
	maxWindowSize = 1 << 27 // the bundler compresses runtime parts with a window of at most their size
)

// stage makes <base>/<runtime id> complete: decode every part into a temp dir, then rename.
func stage(p *payload, base string) error {
	if err := makeBase(base); err != nil {
		return err
	}
	if noexec(base) {
		return stagingError("cannot stage mke's Python runtime in %s: its filesystem is mounted noexec; set %s "+
			"to a directory on a filesystem that allows execution", base, runtimeDirEnv)
	}
	lock, err := syscall.Open(filepath.Join(base, ".lock"), syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return stagingError("runtime dir %s: %v; set %s to a writable directory", base, err, runtimeDirEnv)
	}
	defer syscall.Close(lock) // closing releases the lock
	for {
		if err = syscall.Flock(lock, syscall.LOCK_EX); err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return stagingError("runtime dir %s: cannot lock it: %v", base, err)
	}
	dir := filepath.Join(base, p.runtimeID)
	if exists(filepath.Join(dir, markerName)) { // staged by another mke while we waited
		return nil
	}
	removeLeftovers(base)
	if exists(dir) { // an incomplete runtime (no marker): start over
		if err := os.RemoveAll(dir); err != nil {
			return stagingError("runtime dir %s: cannot remove the incomplete %s: %v", base, dir, err)
		}
	}
	tmp, err := os.MkdirTemp(base, tmpPrefix+p.runtimeID[:12]+"-")
	if err != nil {
		return stagingError("runtime dir %s: %v; set %s to a writable directory", base, err, runtimeDirEnv)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	errs := make(chan error, len(p.parts))
	for _, pt := range p.parts {
		go func(pt part) { errs <- p.unpack(pt, tmp) }(pt)
	}
	var first error
	for range p.parts {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	if err := os.WriteFile(filepath.Join(tmp, markerName), []byte(p.runtimeID+"\n"), 0o644); err != nil {
		return writeError(base, err)
	}
	if err := syncfs(tmp); err != nil { // every byte on disk before the name that promises them
		return writeError(base, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return writeError(base, err)
	}
	done = true
	if err := fsyncDir(base); err != nil {
		return writeError(base, err)
	}
	removeOldRuntimes(base, p.runtimeID)
	return nil
}

func writeError(base string, err error) error {
	hint := ""
	if errors.Is(err, syscall.ENOSPC) {
		hint = " (disk full?)"
	}
	return stagingError("runtime dir %s: staging failed: %v%s", base, err, hint)
}

// makeBase creates the runtime base and its missing parents, 0700 (a data or cache dir).
func makeBase(base string) error {
	if err := os.MkdirAll(base, 0o700); err != nil {
		return stagingError("cannot create the runtime dir %s: %v; set %s to a writable directory", base, err, runtimeDirEnv)
	}
	if err := syscall.Access(base, 2 /* W_OK */); err != nil {
		return stagingError("runtime dir %s is not writable; set %s to a writable directory", base, runtimeDirEnv)
	}
	return nil
}

// unpack decodes one part's frame and writes the files of its tar stream under dir.
func (p *payload) unpack(pt part, dir string) error {
	where := p.label + ": payload frame " + pt.name
	damaged := func(what string) error {
		return payloadError("%s: %s; the executable is damaged or tampered with, download it again", where, what)
	}
	h := sha256.New()
	src := io.TeeReader(io.NewSectionReader(p.r, p.data+pt.frame.Offset, pt.frame.Size), h)
	dec, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindowSize))
	if err != nil {
		return damaged(err.Error())
	}
	defer dec.Close()
	counted := &countingReader{r: dec}
	tr := tar.NewReader(counted)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return damaged("cannot be decoded (" + err.Error() + ")")
		}
		name := hdr.Name
		if hdr.Typeflag != tar.TypeReg || name == "" || filepath.IsAbs(name) || filepath.Clean(name) != name ||
			name == markerName || strings.HasPrefix(name, "../") || name == ".." {
			return damaged("unexpected entry " + name)
		}
		if err := writeFile(filepath.Join(dir, name), os.FileMode(hdr.Mode)&0o755, tr, hdr.Size); err != nil {
			if counted.err != nil || errors.Is(err, io.ErrUnexpectedEOF) { // reading failed, not writing
				return damaged("cannot be decoded (" + err.Error() + ")")
			}
			return writeError(filepath.Dir(dir), err)
		}
	}
	// The rest of the frame: tar padding, then zstd's checksum (checked by the decoder at its end).
	if _, err := io.Copy(io.Discard, counted); err != nil {
		return damaged("cannot be decoded (" + err.Error() + ")")
	}
	if _, err := io.Copy(io.Discard, src); err != nil {
		return damaged(err.Error())
	}
	if hex.EncodeToString(h.Sum(nil)) != pt.frame.SHA256 {
		return damaged("compressed bytes do not match their sha256")
	}
	if counted.n != pt.size {
		return damaged("decodes to the wrong size")
	}
	return nil
}

func writeFile(path string, mode os.FileMode, r io.Reader, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// countingReader counts the decoded bytes and remembers a decoding error (to tell it from a write error).
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

func syncfs(dir string) error {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if _, _, e := syscall.Syscall(sysSyncfs, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}

func fsyncDir(dir string) error {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return syscall.Fsync(fd)
}

// removeLeftovers removes temp dirs of stagings that were killed (call with the lock held).
func removeLeftovers(base string) {
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}

// removeOldRuntimes removes runtimes of other versions that no process executes
// (their processes' /proc/<pid>/exe is the runtime's bin/mke). Call with the lock held.
func removeOldRuntimes(base, keep string) {
	entries, _ := os.ReadDir(base)
	var old []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != keep && isDigest(e.Name()) {
			old = append(old, e.Name())
		}
	}
	if len(old) == 0 {
		return
	}
	running := map[string]bool{}
	procs, _ := os.ReadDir("/proc")
	for _, pr := range procs {
		if exe, err := os.Readlink(filepath.Join("/proc", pr.Name(), "exe")); err == nil {
			running[strings.TrimSuffix(exe, " (deleted)")] = true
		}
	}
	realBase, err := filepath.EvalSymlinks(base)
	if err != nil {
		return
	}
	for _, name := range old {
		prefix := filepath.Join(realBase, name) + "/"
		inUse := false
		for exe := range running {
			if strings.HasPrefix(exe, prefix) {
				inUse = true
				break
			}
		}
		if !inUse {
			os.RemoveAll(filepath.Join(base, name))
		}
	}
}
