package limits

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMatchesBPFHeader keeps bpf/lb_consts.h and this package in step: the BPF maps are
// sized by the header, the Go side checks ids and configurations against these constants.
func TestMatchesBPFHeader(t *testing.T) {
	defines := readDefines(t, filepath.Join("..", "..", "bpf", "lb_consts.h"))
	for name, want := range map[string]int{
		"MAX_VIPS":        VIPMapSize,
		"MAX_BACKENDS":    BackendMapSize,
		"RING_SIZE":       DefaultRingSize,
		"CT_SIZE":         DefaultConntrackSize,
		"MAX_LOCAL_VIPS":  MaxLocalVIPs,
		"MAX_DECAP_ALLOW": MaxDecapAllow,
	} {
		got, ok := defines[name]
		if !ok {
			t.Errorf("bpf/lb_consts.h: no #define %s", name)
			continue
		}
		if got != want {
			t.Errorf("bpf/lb_consts.h: %s is %d, the Go constant is %d", name, got, want)
		}
	}
}

func TestRelations(t *testing.T) {
	if MaxBackends != BackendMapSize-1 {
		t.Errorf("MaxBackends %d: want BackendMapSize-1 (id 0 is reserved)", MaxBackends)
	}
	for _, n := range []int{MinRingSize, DefaultRingSize, MaxRingSize} {
		if !prime(n) {
			t.Errorf("ring size %d is not prime", n)
		}
	}
	// MaxRingSize is the largest prime below 2^20.
	for n := MaxRingSize + 1; n < 1<<20; n++ {
		if prime(n) {
			t.Errorf("%d is a prime below 2^20 larger than MaxRingSize", n)
		}
	}
	if !(MinRingSize <= DefaultRingSize && DefaultRingSize <= MaxRingSize) {
		t.Error("ring sizes out of order")
	}
	if !(MinConntrackSize <= DefaultConntrackSize && DefaultConntrackSize <= MaxConntrackSize) {
		t.Error("conntrack sizes out of order")
	}
}

func prime(n int) bool {
	if n < 2 {
		return false
	}
	for i := 2; i*i <= n; i++ {
		if n%i == 0 {
			return false
		}
	}
	return true
}

// readDefines returns the integer #defines of a C header, including those inside
// #ifndef NAME / #define NAME VALUE / #endif default blocks.
func readDefines(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[0] != "#define" {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimRight(fields[2], "UuLl"), 0, 64)
		if err != nil {
			continue
		}
		out[fields[1]] = int(v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
