package limits

import "testing"

func TestRelations(t *testing.T) {
	if MaxBackends != int(BackendMapSize)-1 {
		t.Errorf("MaxBackends %d: want BackendMapSize-1 (id 0 is reserved)", MaxBackends)
	}
	for _, n := range []int{MinRingSize, int(DefaultRingSize), MaxRingSize} {
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
