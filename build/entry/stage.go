package main

// Staging the runtime: once per runtime id, under a lock, verified, all or nothing.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

const (
	tmpPrefix     = ".tmp-"
	maxWindowSize = 1 << 27   // the bundler compresses runtime parts with a window of at most their size
	maxPartSize   = 1<<27 - 1 // build/bundle/runtime.py, MAX_PART: a part decodes into memory, then is checked
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
	t0 := time.Now()
	// The parts' buffers (about twice the runtime's size) live until the exec that follows:
	// collecting them meanwhile would only cost time.
	debug.SetGCPercent(-1)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(len(p.parts)), zstd.WithDecoderMaxWindow(maxWindowSize),
		zstd.WithDecoderMaxMemory(maxPartSize))
	if err != nil {
		return stagingError("zstd: %v", err)
	}
	defer dec.Close()
	errs := make(chan error, len(p.parts))
	for _, pt := range p.parts {
		go func(pt part) { errs <- p.unpack(dec, pt, tmp) }(pt)
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
	tDecoded := time.Now()
	if err := syncfs(tmp); err != nil { // every byte on disk before the name that promises them
		return writeError(base, err)
	}
	tSynced := time.Now()
	if err := os.Rename(tmp, dir); err != nil {
		return writeError(base, err)
	}
	done = true
	if err := fsyncDir(base); err != nil {
		return writeError(base, err)
	}
	removeOldRuntimes(base, p.runtimeID)
	trace("staged %d parts into %s: decode+write %v, syncfs %v, rename+cleanup %v", len(p.parts), dir,
		tDecoded.Sub(t0), tSynced.Sub(tDecoded), time.Since(tSynced))
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

// unpack decodes one part's frame and writes the files of its tar stream under dir. Nothing is
// written before the frame checked out: its compressed bytes against their sha256 (hashed on
// another core while the frame decodes), zstd's checksum of the content, the content's size.
func (p *payload) unpack(dec *zstd.Decoder, pt part, dir string) error {
	where := p.label + ": payload frame " + pt.name
	damaged := func(what string) error {
		return payloadError("%s: %s; the executable is damaged or tampered with, download it again", where, what)
	}
	comp := make([]byte, pt.frame.Size)
	if _, err := p.r.ReadAt(comp, p.data+pt.frame.Offset); err != nil {
		return damaged("cannot be read (" + err.Error() + ")")
	}
	digest := make(chan string, 1)
	go func() {
		sum := sha256.Sum256(comp)
		digest <- hex.EncodeToString(sum[:])
	}()
	content, err := dec.DecodeAll(comp, make([]byte, 0, pt.size))
	if <-digest != pt.frame.SHA256 {
		return damaged("compressed bytes do not match their sha256")
	}
	if err != nil {
		return damaged("cannot be decoded (" + err.Error() + ")")
	}
	if int64(len(content)) != pt.size {
		return damaged("decodes to the wrong size")
	}
	tr := tar.NewReader(bytes.NewReader(content))
	buf := make([]byte, 1<<20)
	made := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return damaged("is not a valid tar stream (" + err.Error() + ")")
		}
		name := hdr.Name
		if hdr.Typeflag != tar.TypeReg || name == "" || filepath.IsAbs(name) || filepath.Clean(name) != name ||
			name == markerName || strings.HasPrefix(name, "../") || name == ".." {
			return damaged("unexpected entry " + name)
		}
		if err := writeFile(filepath.Join(dir, name), os.FileMode(hdr.Mode)&0o755, tr, hdr.Size, buf, made); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return damaged("is not a valid tar stream (" + err.Error() + ")")
			}
			return writeError(filepath.Dir(dir), err)
		}
	}
}

// writeFile creates path (and its missing parent dirs, remembered in made) with size bytes from r.
// Plain syscalls: os.OpenFile would try to register each file with Go's network poller.
func writeFile(path string, mode os.FileMode, r io.Reader, size int64, buf []byte, made map[string]bool) error {
	if dir := filepath.Dir(path); !made[dir] {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		made[dir] = true
	}
	fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, uint32(mode))
	if err != nil {
		return &os.PathError{Op: "create", Path: path, Err: err}
	}
	var n int64
	for n < size {
		m, rerr := r.Read(buf[:min(int64(len(buf)), size-n)])
		for w := 0; w < m; {
			k, werr := syscall.Write(fd, buf[w:m])
			if werr == syscall.EINTR {
				continue
			}
			if werr != nil {
				syscall.Close(fd)
				return &os.PathError{Op: "write", Path: path, Err: werr}
			}
			w += k
		}
		n += int64(m)
		if rerr == io.EOF && n < size {
			syscall.Close(fd)
			return io.ErrUnexpectedEOF
		}
		if rerr != nil && rerr != io.EOF {
			syscall.Close(fd)
			return rerr
		}
	}
	if err := syscall.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
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
