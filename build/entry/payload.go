package main

// Reading the payload: the same format mke/payload_format.py writes and reads
// (docs/payload.md). Only what the entry needs: the header, the manifest, the runtime parts.

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"syscall"
)

const (
	sectionName    = "mkepayload"
	payloadMagic   = "MKEPAYLD"
	formatVersion  = 1
	headerSize     = 128
	manifestSchema = 1
	runtimePrefix  = "mke-runtime."
)

// fdReader reads a file by pread(2) on a raw fd (an *os.File would close it when collected).
type fdReader int

func (r fdReader) ReadAt(b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := syscall.Pread(int(r), b[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

type frame struct {
	Offset      int64    `json:"offset"`
	Size        int64    `json:"size"`
	DecodedSize int64    `json:"decoded_size"`
	SHA256      string   `json:"sha256"`
	Members     []string `json:"members"`
}

type library struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Frame  int    `json:"frame"`
	Offset int64  `json:"offset"`
}

type manifest struct {
	Schema    int       `json:"schema"`
	Codec     string    `json:"codec"`
	Frames    []frame   `json:"frames"`
	Libraries []library `json:"libraries"`
}

// part is one piece of the runtime: a tar stream that is the whole content of one frame.
type part struct {
	name  string
	frame frame
	size  int64
}

type payload struct {
	r         fdReader
	label     string // how messages name the executable
	data      int64  // file offset of the data area
	parts     []part
	runtimeID string
}

func truncated(label string) error {
	return payloadError("%s: the executable is truncated (its ELF section table is missing); download it again", label)
}

// openPayload reads the manifest of the executable open on fd and finds the runtime in it.
func openPayload(fd int, label string) (*payload, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, payloadError("%s: cannot read the executable: %v", label, err)
	}
	r := fdReader(fd)
	ef, err := elf.NewFile(io.NewSectionReader(r, 0, st.Size))
	if err != nil {
		return nil, truncated(label)
	}
	sec := ef.Section(sectionName)
	if sec == nil {
		return nil, payloadError("%s has no payload (ELF section %s); it is not a complete mke: download it again", label, sectionName)
	}
	base, size := int64(sec.Offset), int64(sec.Size)
	if base < 0 || size < headerSize || base+size > st.Size {
		return nil, truncated(label)
	}
	head := make([]byte, headerSize)
	if _, err := r.ReadAt(head, base); err != nil {
		return nil, truncated(label)
	}
	if string(head[:8]) != payloadMagic {
		return nil, payloadError("%s: payload header has the wrong magic; the executable is damaged, download it again", label)
	}
	le := binary.LittleEndian
	version, hsize := le.Uint32(head[8:]), le.Uint32(head[12:])
	mOff, mLen, dOff, dLen := le.Uint64(head[16:]), le.Uint64(head[24:]), le.Uint64(head[32:]), le.Uint64(head[40:])
	if version != formatVersion {
		return nil, payloadError("%s: payload format %d is not supported (this entry reads %d)", label, version, formatVersion)
	}
	if hsize != headerSize || mOff < headerSize || dOff < mOff+mLen || mLen > 1<<26 {
		return nil, payloadError("%s: payload header is inconsistent; the executable is damaged, download it again", label)
	}
	if dOff+dLen > uint64(size) {
		return nil, payloadError("%s: the payload is truncated (%d bytes, its header says %d); download mke again", label, size, dOff+dLen)
	}
	body := make([]byte, mLen)
	if _, err := r.ReadAt(body, base+int64(mOff)); err != nil {
		return nil, payloadError("%s: the payload manifest is truncated; download mke again", label)
	}
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], head[48:80]) {
		return nil, payloadError("%s: the payload manifest does not match its sha256 (tampered or damaged); download mke again", label)
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, payloadError("%s: payload manifest: not valid JSON (%v); the executable is damaged, download it again", label, err)
	}
	if m.Schema != manifestSchema || m.Codec != "zstd" {
		return nil, payloadError("%s: payload manifest schema %d, codec %q: not supported by this entry", label, m.Schema, m.Codec)
	}
	p := &payload{r: r, label: label, data: base + int64(dOff)}
	id := sha256.New()
	fmt.Fprintf(id, "mke-runtime 1\n")
	for _, lib := range m.Libraries {
		if !strings.HasPrefix(lib.Name, runtimePrefix) {
			continue
		}
		if lib.Frame < 0 || lib.Frame >= len(m.Frames) {
			return nil, payloadError("%s: payload manifest: %s names frame %d, which does not exist; download mke again", label, lib.Name, lib.Frame)
		}
		f := m.Frames[lib.Frame]
		if lib.Offset != 0 || lib.Size != f.DecodedSize || lib.Size > maxPartSize || len(f.Members) != 1 || f.Members[0] != lib.Name ||
			f.Offset < 0 || f.Size < 0 || uint64(f.Offset+f.Size) > dLen || !isDigest(f.SHA256) || !isDigest(lib.SHA256) {
			return nil, payloadError("%s: payload manifest: runtime part %s is not one whole frame; download mke again", label, lib.Name)
		}
		p.parts = append(p.parts, part{name: lib.Name, frame: f, size: lib.Size})
		fmt.Fprintf(id, "%s %s %d\n", lib.Name, lib.SHA256, lib.Size)
	}
	if len(p.parts) == 0 {
		return nil, payloadError("%s: the payload carries no Python runtime (no %s* entries); it was not made by mke's bundler", label, runtimePrefix)
	}
	p.runtimeID = hex.EncodeToString(id.Sum(nil))
	return p, nil
}

func isDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}
