package bpfobj

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// MinKernel is the oldest kernel the BPF programs are tested on (make test boots Debian
// 12's 6.1 and runs every BPF test there). docs/operations.md lists the features that
// set the floor.
const MinKernel = "6.1"

// LoadError is a BPF object that did not load, said so that an operator can act on it:
// which program (or map) failed, the verifier's complaint, and the kernel needed. The
// cause (with the whole verifier log) stays reachable through errors.As and errors.Is;
// format with %+v to print the log.
type LoadError struct {
	Object    string // the object file: xdp_lb, decap
	Program   string // the program or map that failed, if known: "program xdp_lb"
	Complaint string // the first line of the verifier's complaint, with where it is
	Kernel    string // the running kernel's release
	Missing   []string
	Err       error
}

func (e *LoadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "load %s: ", e.Object)
	what := e.Program
	if what == "" {
		what = e.Object
	}
	switch {
	case e.Complaint != "":
		fmt.Fprintf(&b, "the kernel's verifier rejected %s: %s", what, e.Complaint)
	case len(e.Missing) > 0:
		fmt.Fprintf(&b, "%s: this kernel lacks %s", what, strings.Join(e.Missing, ", "))
	case errors.Is(e.Err, unix.EPERM):
		fmt.Fprintf(&b, "%s (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)", e.cause())
		return b.String()
	default:
		b.WriteString(e.cause())
	}
	if kernelOlder(e.Kernel, MinKernel) {
		fmt.Fprintf(&b, "; l4lb needs Linux %s or newer, this is %s", MinKernel, e.Kernel)
	} else if e.Kernel != "" {
		fmt.Fprintf(&b, "; Linux %s or newer should load it and this is %s: please report this with the verifier log", MinKernel, e.Kernel)
	}
	return b.String()
}

func (e *LoadError) Unwrap() error { return e.Err }

// cause is the error's own text, which cilium/ebpf starts with the program or map.
func (e *LoadError) cause() string {
	s := errSummary(e.Err)
	if e.Program == "" || strings.HasPrefix(s, e.Program+":") {
		return s
	}
	return e.Program + ": " + s
}

// Format prints the verifier log after the message for %+v.
func (e *LoadError) Format(f fmt.State, verb rune) {
	var verr *ebpf.VerifierError
	if verb == 'v' && f.Flag('+') && errors.As(e.Err, &verr) {
		fmt.Fprintf(f, "%s\nverifier log:\n%s", e.Error(), strings.Join(verr.Log, "\n"))
		return
	}
	fmt.Fprint(f, e.Error())
}

// VerifierLog returns the last max lines of the verifier log of a load error (all of it
// for max <= 0), or "" if err carries none.
func VerifierLog(err error, max int) string {
	var verr *ebpf.VerifierError
	if !errors.As(err, &verr) {
		return ""
	}
	log := verr.Log
	if max > 0 && len(log) > max {
		return fmt.Sprintf("(%d earlier lines left out)\n%s", len(log)-max, strings.Join(log[len(log)-max:], "\n"))
	}
	return strings.Join(log, "\n")
}

// DescribeLoad describes an error from loading the BPF object obj on this kernel as a
// *LoadError (nil for nil).
func DescribeLoad(obj string, err error) error {
	if err == nil {
		return nil
	}
	e := describeLoadError(obj, err, kernelRelease())
	var verr *ebpf.VerifierError
	if e.Complaint == "" && !errors.As(err, &verr) && errors.Is(err, ebpf.ErrNotSupported) {
		e.Missing = missingFeatures()
	}
	return e
}

// describeLoadError is DescribeLoad without the probes of the running kernel.
func describeLoadError(obj string, err error, kernel string) *LoadError {
	e := &LoadError{Object: obj, Kernel: kernel, Err: err}
	if m := failedObject.FindStringSubmatch(err.Error()); m != nil {
		e.Program = m[1] + " " + m[2]
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		e.Complaint = complaint(verr.Log)
	}
	return e
}

// failedObject finds "program NAME:" or "map NAME:" in cilium/ebpf's load errors.
var failedObject = regexp.MustCompile(`\b(program|map) ([A-Za-z0-9_.]+):`)

var (
	insnLine   = regexp.MustCompile(`^\s*(\d+): `)
	sourceLine = regexp.MustCompile(`^\s*; .*?(?: @ (\S+:\d+))?\s*$`)
	branchLine = regexp.MustCompile(`^\s*from \d+ to \d+:`)
)

// complaint picks the verifier's complaint out of its log: the first line after the last
// instruction it printed, with that instruction's number and, where the kernel printed
// it (6.x with BTF line info), the source line.
func complaint(log []string) string {
	// Drop the summary the verifier ends with.
	n := len(log)
	for n > 0 {
		l := strings.TrimSpace(log[n-1])
		if l == "" || strings.HasPrefix(l, "processed ") || strings.HasPrefix(l, "verification time") ||
			strings.HasPrefix(l, "stack depth") || strings.HasPrefix(l, "mark_precise") {
			n--
			continue
		}
		break
	}
	log = log[:n]
	last := -1
	for i, l := range log {
		if insnLine.MatchString(l) || sourceLine.MatchString(l) || branchLine.MatchString(l) {
			last = i
		}
	}
	var msg string
	switch {
	case last >= 0 && last+1 < len(log):
		msg = strings.TrimSpace(log[last+1])
	case len(log) > 0:
		msg = strings.TrimSpace(log[len(log)-1])
	default:
		return ""
	}
	var where []string
	for i := last; i >= 0; i-- {
		if m := insnLine.FindStringSubmatch(log[i]); m != nil {
			where = append(where, "instruction "+m[1])
			break
		}
	}
	for i := last; i >= 0; i-- {
		if m := sourceLine.FindStringSubmatch(log[i]); m != nil {
			if m[1] != "" {
				where = append(where, m[1])
			}
			break
		}
	}
	if len(where) > 0 {
		msg += " (at " + strings.Join(where, ", ") + ")"
	}
	return msg
}

// errSummary is the error's text without the verifier log cilium/ebpf may append.
func errSummary(err error) string {
	s := err.Error()
	if i := strings.Index(s, " ("); i > 0 && strings.HasSuffix(s, "line(s) omitted)") {
		return s[:i]
	}
	return s
}

// missingFeatures probes the kernel for what the programs use, oldest first. Only asked
// after a load failed with ErrNotSupported.
func missingFeatures() []string {
	probes := []struct {
		name  string
		probe func() error
	}{
		{"XDP programs (4.8)", func() error { return features.HaveProgramType(ebpf.XDP) }},
		{"per-CPU arrays (4.6)", func() error { return features.HaveMapType(ebpf.PerCPUArray) }},
		{"LRU hash maps (4.10)", func() error { return features.HaveMapType(ebpf.LRUHash) }},
		{"bpf_xdp_adjust_head (4.10)", func() error { return features.HaveProgramHelper(ebpf.XDP, asm.FnXdpAdjustHead) }},
		{"bpf_ktime_get_ns in XDP", func() error { return features.HaveProgramHelper(ebpf.XDP, asm.FnKtimeGetNs) }},
	}
	var out []string
	for _, p := range probes {
		if err := p.probe(); errors.Is(err, ebpf.ErrNotSupported) {
			out = append(out, p.name)
		}
	}
	return out
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// kernelOlder tells whether release (6.1.0-56-amd64) is older than min (6.1), comparing
// major and minor. An unknown release is not called older.
func kernelOlder(release, min string) bool {
	r, ok1 := majorMinor(release)
	m, ok2 := majorMinor(min)
	if !ok1 || !ok2 {
		return false
	}
	if r[0] != m[0] {
		return r[0] < m[0]
	}
	return r[1] < m[1]
}

func majorMinor(s string) ([2]int, bool) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		return [2]int{}, false
	}
	a, err1 := strconv.Atoi(f[0])
	b, err2 := strconv.Atoi(f[1])
	return [2]int{a, b}, err1 == nil && err2 == nil
}
