// Command mke-entry is the program at the start of dist/mke: a static executable (no
// interpreter, no shared library) that starts mke's Python runtime with the dynamic loader
// and the libraries that runtime carries, so that nothing but the kernel comes from the host.
//
//  1. Open the executable it runs from (/proc/self/exe) and find its payload: the ELF
//     section "mkepayload" (by name), its header and manifest (sha256-checked), and in the
//     manifest the runtime's parts (the "libraries" named mke-runtime.N).
//  2. The runtime directory is <base>/<runtime id>, the id being a digest of the parts.
//     <base> is $MKE_RUNTIME_DIR, else /var/lib/mke/runtime for root, else
//     $XDG_CACHE_HOME/mke/runtime or ~/.cache/mke/runtime. If <dir>/.mke-runtime exists the
//     runtime is complete (the marker is written last): exec it. Nothing is hashed or read.
//  3. Otherwise stage it, under <base>/.lock: decode the parts in parallel into a temp dir
//     (each frame checked against its sha256, zstd's checksum and its size), syncfs, rename
//     into place, and remove runtimes of other versions that no process runs.
//  4. exec <dir>/bin/mke (the runtime's ld-linux-x86-64.so.2) --inhibit-cache --library-path
//     <dir>/lib <dir>/bin/python3.11 -S -P -c "from mke.start import main; main()" ARGS...
//     The executable's fd stays open across exec for Python to read the payload from.
//
// Errors are one line, "mke: error: ...", with mke's exit codes (4: payload, 5: staging).
// See docs/payload.md.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	exitPayload = 4 // mke.errors.PayloadError
	exitStaging = 5 // mke.errors.StagingError

	runtimeDirEnv   = "MKE_RUNTIME_DIR"
	exeEnv          = "MKE_EXE"
	exeFDEnv        = "MKE_EXE_FD"
	savedPrefix     = "MKE_ENTRY_SAVED_"
	defaultRootBase = "/var/lib/mke/runtime"
	markerName      = ".mke-runtime"
	traceEnv        = "MKE_ENTRY_TRACE" // set: one stderr line per step of the entry (timings)
	pythonStart     = "from mke.start import main; main()"
)

// failure is an error with the exit code mke uses for its class.
type failure struct {
	code int
	msg  string
}

func (f *failure) Error() string { return f.msg }

var (
	started = time.Now()
	tracing = os.Getenv(traceEnv) != ""
)

// trace prints one line about what the entry did, with the time since it started, when $MKE_ENTRY_TRACE is set.
func trace(format string, args ...any) {
	if tracing {
		fmt.Fprintf(os.Stderr, "mke-entry: %v: %s\n", time.Since(started).Round(time.Microsecond), fmt.Sprintf(format, args...))
	}
}

func payloadError(format string, args ...any) error {
	return &failure{code: exitPayload, msg: fmt.Sprintf(format, args...)}
}

func stagingError(format string, args ...any) error {
	return &failure{code: exitStaging, msg: fmt.Sprintf(format, args...)}
}

func main() {
	err := run(os.Args)
	code := exitStaging
	if f, ok := err.(*failure); ok {
		code = f.code
	}
	fmt.Fprintf(os.Stderr, "mke: error: %v\n", err)
	os.Exit(code)
}

// run returns only on failure: on success the process becomes the runtime.
func run(args []string) error {
	exe := executablePath(args[0])
	fd, err := openSelf(exe)
	if err != nil {
		return payloadError("%s: cannot open the executable: %v", exe, err)
	}
	p, err := openPayload(fd, exe)
	if err != nil {
		return err
	}
	base, err := runtimeBase()
	if err != nil {
		return err
	}
	dir := filepath.Join(base, p.runtimeID)
	trace("payload read: runtime %s", dir)
	for attempt := 0; ; attempt++ {
		if !exists(filepath.Join(dir, markerName)) {
			if err := stage(p, base); err != nil {
				return err
			}
		}
		trace("exec %s", filepath.Join(dir, "bin", "mke"))
		err = execRuntime(dir, fd, exe, args[1:])
		// ENOENT: another mke removed this runtime between our check and exec; stage it again.
		if err != syscall.ENOENT || attempt > 0 {
			break
		}
	}
	return explainExec(dir, err)
}

// executablePath names the file this process runs from, for messages and for Python.
func executablePath(argv0 string) string {
	if p, err := os.Readlink("/proc/self/exe"); err == nil {
		return strings.TrimSuffix(p, " (deleted)")
	}
	if strings.Contains(argv0, "/") {
		if abs, err := filepath.Abs(argv0); err == nil {
			return abs
		}
		return argv0
	}
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if d == "" {
			continue
		}
		c := filepath.Join(d, argv0)
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return c
		}
	}
	return argv0
}

// openSelf opens the running executable without O_CLOEXEC: the fd is inherited by the
// runtime, which reads the payload through it even if the file is replaced meanwhile.
func openSelf(exe string) (int, error) {
	fd, err := syscall.Open("/proc/self/exe", syscall.O_RDONLY, 0)
	if err == nil {
		return fd, nil
	}
	return syscall.Open(exe, syscall.O_RDONLY, 0)
}

// runtimeBase is the directory holding runtimes by id (never a temp dir).
func runtimeBase() (string, error) {
	if d := os.Getenv(runtimeDirEnv); d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			return "", stagingError("$%s=%s: %v", runtimeDirEnv, d, err)
		}
		return abs, nil
	}
	if os.Geteuid() == 0 {
		return defaultRootBase, nil
	}
	if x := os.Getenv("XDG_CACHE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "mke", "runtime"), nil
	}
	if h := os.Getenv("HOME"); filepath.IsAbs(h) && h != "/" {
		return filepath.Join(h, ".cache", "mke", "runtime"), nil
	}
	return "", stagingError("no directory for mke's Python runtime: HOME is not set; set %s to a writable "+
		"directory on a filesystem that allows execution", runtimeDirEnv)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// execRuntime replaces this process with the staged runtime's Python.
func execRuntime(dir string, fd int, exe string, args []string) error {
	argv := []string{"mke", "--inhibit-cache", "--library-path", filepath.Join(dir, "lib"),
		filepath.Join(dir, "bin", "python3.11"), "-S", "-P", "-c", pythonStart}
	argv = append(argv, args...)
	return syscall.Exec(filepath.Join(dir, "bin", "mke"), argv, runtimeEnv(os.Environ(), dir, fd, exe))
}

// runtimeEnv is the caller's environment for the runtime: what Python must not see (PYTHON*,
// LD_PRELOAD, LD_AUDIT) is kept as MKE_ENTRY_SAVED_<NAME>, which mke.start puts back for the
// processes mke starts, and Python is pointed at the runtime.
func runtimeEnv(environ []string, dir string, fd int, exe string) []string {
	env := make([]string, 0, len(environ)+10)
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == exeEnv || name == exeFDEnv || strings.HasPrefix(name, savedPrefix):
			continue // set below; a stale one would confuse mke.start
		case strings.HasPrefix(name, "PYTHON") || name == "LD_PRELOAD" || name == "LD_AUDIT":
			env = append(env, savedPrefix+kv)
		default:
			env = append(env, kv)
		}
	}
	return append(env,
		"PYTHONHOME="+dir,
		"PYTHONPATH="+filepath.Join(dir, "lib", "python3.11", "site-packages.zip")+":"+
			filepath.Join(dir, "lib", "python3.11", "site-packages"),
		"PYTHONNOUSERSITE=1",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONCOERCECLOCALE=0", // else Python sets LC_CTYPE=C.UTF-8, which every child would inherit
		"PYTHONUTF8=1",
		exeEnv+"="+exe,
		exeFDEnv+"="+strconv.Itoa(fd),
	)
}

// explainExec turns a failed exec into one line that says what to do.
func explainExec(dir string, err error) error {
	if noexec(dir) {
		return stagingError("cannot run mke's Python runtime in %s: its filesystem is mounted noexec; set %s "+
			"to a directory on a filesystem that allows execution", dir, runtimeDirEnv)
	}
	return stagingError("cannot run mke's Python runtime %s: %v; remove %s and run mke again", filepath.Join(dir, "bin", "mke"), err, dir)
}

const stNoexec = 0x8 // ST_NOEXEC in statfs(2)'s f_flags

func noexec(path string) bool {
	var st syscall.Statfs_t
	for p := path; ; p = filepath.Dir(p) {
		if err := syscall.Statfs(p, &st); err == nil {
			return st.Flags&stNoexec != 0
		}
		if p == "/" || p == "." {
			return false
		}
	}
}
