package bpfobj

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The end of the log Debian 12's 6.1 printed for xdp_lb before len16 (make test-kernels).
var log61 = []string{
	"0: R1=ctx(off=0,imm=0) R10=fp0",
	"; __u32 tot = bpf_ntohs(iph->tot_len);",
	"128: (69) r5 = *(u16 *)(r2 +2)        ; R2=pkt(off=18,r=38,imm=0) R5_w=scalar(umax=65535,var_off=(0x0; 0xffff))",
	"129: (dc) r5 = be16 r5                ; R5_w=scalar()",
	"; if ((void *)iph + tot > data_end)",
	"158: (bf) r4 = r2                     ; R2=pkt(off=18,r=38,imm=0) R4_w=pkt(off=18,r=38,imm=0)",
	"159: (0f) r4 += r5",
	"math between pkt pointer and register with unbounded min value is not allowed",
	"processed 138 insns (limit 1000000) max_states_per_insn 0 total_states 13 peak_states 13 mark_read 2",
}

// The same on 6.12, which names the source line.
var log612 = []string{
	"; if ((void *)iph + tot > data_end) @ parse.h:176",
	"158: (bf) r4 = r2                      ; R2=pkt(off=18,r=38) R4_w=pkt(off=18,r=38)",
	"159: (0f) r4 += r5",
	"math between pkt pointer and register with unbounded min value is not allowed",
	"processed 138 insns (limit 1000000) max_states_per_insn 0 total_states 13 peak_states 13 mark_read 2",
}

func verifierErr(prog string, log []string) error {
	return fmt.Errorf("program %s: %w", prog, &ebpf.VerifierError{Cause: fmt.Errorf("load program: %w", unix.EINVAL), Log: log})
}

func TestLoadErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		name   string
		obj    string
		err    error
		kernel string
		want   string
	}{
		{
			name: "verifier on an old kernel", obj: "xdp_lb", err: verifierErr("xdp_lb", log61), kernel: "5.10.0-28-amd64",
			want: "load xdp_lb: the kernel's verifier rejected program xdp_lb: math between pkt pointer and register with unbounded min value is not allowed (at instruction 159); l4lb needs Linux 6.1 or newer, this is 5.10.0-28-amd64",
		},
		{
			name: "verifier on a supported kernel names the source line", obj: "xdp_lb", err: verifierErr("xdp_lb", log612), kernel: "6.12.117+deb12-amd64",
			want: "load xdp_lb: the kernel's verifier rejected program xdp_lb: math between pkt pointer and register with unbounded min value is not allowed (at instruction 159, parse.h:176); Linux 6.1 or newer should load it and this is 6.12.117+deb12-amd64: please report this with the verifier log",
		},
		{
			name: "first line of a two-line complaint", obj: "decap", kernel: "6.1.0-56-amd64",
			err: verifierErr("xdp_decap", []string{
				"; if (o->protocol != PROTO_IPIP) @ decap.c:90",
				"42: (71) r1 = *(u8 *)(r4 +9)",
				"invalid access to packet, off=9 size=1, R4(id=0,off=9,r=0)",
				"R4 offset is outside of the packet",
				"processed 40 insns (limit 1000000) max_states_per_insn 0 total_states 3 peak_states 3 mark_read 1",
			}),
			want: "load decap: the kernel's verifier rejected program xdp_decap: invalid access to packet, off=9 size=1, R4(id=0,off=9,r=0) (at instruction 42, decap.c:90); Linux 6.1 or newer should load it and this is 6.1.0-56-amd64: please report this with the verifier log",
		},
		{
			name: "a map the kernel cannot create", obj: "xdp_lb", kernel: "4.9.0-19-amd64",
			err:  fmt.Errorf("map conntrack: map create: %w", ebpf.ErrNotSupported),
			want: "load xdp_lb: map conntrack: map create: not supported; l4lb needs Linux 6.1 or newer, this is 4.9.0-19-amd64",
		},
		{
			name: "not root", obj: "decap", kernel: "6.12.117+deb12-amd64",
			err:  fmt.Errorf("map local_vips: map create: %w", unix.EPERM),
			want: "load decap: map local_vips: map create: operation not permitted (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)",
		},
		{
			name: "unknown kernel release", obj: "xdp_lb", kernel: "",
			err:  verifierErr("xdp_lb", log61),
			want: "load xdp_lb: the kernel's verifier rejected program xdp_lb: math between pkt pointer and register with unbounded min value is not allowed (at instruction 159)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := describeLoadError(tc.obj, tc.err, tc.kernel)
			if got.Error() != tc.want {
				t.Errorf("message:\n got %s\nwant %s", got.Error(), tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("the cause is lost: errors.Is(%v) is false", tc.err)
			}
		})
	}
}

func TestLoadErrorMissingFeatures(t *testing.T) {
	e := describeLoadError("xdp_lb", fmt.Errorf("map rings: %w", ebpf.ErrNotSupported), "4.4.0-210-generic")
	e.Missing = []string{"array-of-maps (4.12)"}
	want := "load xdp_lb: map rings: this kernel lacks array-of-maps (4.12); l4lb needs Linux 6.1 or newer, this is 4.4.0-210-generic"
	if e.Error() != want {
		t.Errorf("got  %s\nwant %s", e.Error(), want)
	}
}

func TestLoadErrorKeepsTheVerifierLog(t *testing.T) {
	err := DescribeLoad("xdp_lb", verifierErr("xdp_lb", log61))
	var verr *ebpf.VerifierError
	if !errors.As(err, &verr) || len(verr.Log) != len(log61) {
		t.Fatalf("errors.As(VerifierError) lost the log: %v", err)
	}
	full := fmt.Sprintf("%+v", err)
	if !strings.HasPrefix(full, err.Error()+"\nverifier log:\n") || !strings.Contains(full, "159: (0f) r4 += r5") {
		t.Errorf("%%+v does not print the message and the log:\n%s", full)
	}
	if got := VerifierLog(err, 2); got != "(7 earlier lines left out)\n"+strings.Join(log61[7:], "\n") {
		t.Errorf("VerifierLog(err, 2) = %q", got)
	}
	if VerifierLog(errors.New("other"), 0) != "" {
		t.Error("VerifierLog of an error without a log is not empty")
	}
	if DescribeLoad("decap", nil) != nil {
		t.Error("DescribeLoad(nil) is not nil")
	}
}

func TestKernelOlder(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    bool
	}{
		{"5.15.0-91-generic", true}, {"5.10.0-28-amd64", true}, {"6.0.12", true},
		{"6.1.0-56-amd64", false}, {"6.12.117+deb12-amd64", false}, {"6.18.0", false}, {"7.0", false}, {"", false},
	} {
		if got := kernelOlder(tc.release, MinKernel); got != tc.want {
			t.Errorf("kernelOlder(%q, %s) = %v, want %v", tc.release, MinKernel, got, tc.want)
		}
	}
}
