package daemon

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/nft"
)

// TestPrivilegedAutoFallsBack: where the XDP program cannot be loaded (here: its pin
// directory is not on a bpffs), dataplane: auto picks nftables and says why; an explicit
// xdp fails with the reason instead.
func TestPrivilegedAutoFallsBack(t *testing.T) {
	testutil.RequirePrivileged(t)
	ns := testutil.NewNetNS(t, "auto")
	cfg := &config.Config{Dataplane: "auto", BPFFS: t.TempDir()}
	cfg.XDP.RingSize = 1021
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	err := ns.Do(func() error {
		dp, err := newDataplane(cfg, logger)
		if err != nil {
			return err
		}
		defer func() { _, _ = nft.Remove(0) }()
		info := dp.Info()
		if info.Mode != "nftables" || !strings.HasPrefix(info.Reason, "auto: xdp: ") || !strings.HasSuffix(info.Reason, "; nftables NAT works") {
			t.Errorf("auto chose %q because %q", info.Mode, info.Reason)
		}
		if !strings.Contains(logs.String(), `msg="dataplane chosen" mode=nftables`) {
			t.Errorf("the choice was not logged:\n%s", logs.String())
		}
		cfg.Dataplane = "xdp"
		if _, err := newDataplane(cfg, logger); err == nil {
			t.Error("dataplane: xdp loaded where its pin directory is no bpffs")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUnknownDataplane(t *testing.T) {
	_, err := newDataplane(&config.Config{Dataplane: "dpdk"}, slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("dpdk: %v, want ErrUnsupported", err)
	}
}

func TestNATRefusesLeftoverXDP(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "link_eth0"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"nftables", "iptables"} {
		_, err := newDataplane(&config.Config{Dataplane: mode, BPFFS: dir}, slog.New(slog.DiscardHandler))
		if !errors.Is(err, ErrXDPLeft) || !strings.Contains(err.Error(), "l4lb cleanup") {
			t.Errorf("%s with a pinned xdp link: %v", mode, err)
		}
	}
}

// capacityDP is a data plane whose membership map takes cap pairs.
type capacityDP struct {
	lb.Dataplane
	cap int
}

func (c capacityDP) PairCapacity() int { return c.cap }

// A reload with more (VIP, backend) pairs than the XDP membership map was sized for at
// start is refused (its passes would fail until a restart), naming the numbers.
func TestReloadRefusesMorePairsThanTheMapTakes(t *testing.T) {
	cfg := func(vips, backends int) *config.Config {
		c := &config.Config{}
		for range vips {
			v := config.VIP{}
			for range backends {
				v.Backends = append(v.Backends, config.Backend{})
			}
			c.VIPs = append(c.VIPs, v)
		}
		return c
	}
	d := &Daemon{dp: capacityDP{cap: 12}}
	if err := d.fitsMaps(cfg(3, 4)); err != nil {
		t.Errorf("12 pairs into 12: %v", err)
	}
	err := d.fitsMaps(cfg(3, 5))
	if err == nil || !strings.Contains(err.Error(), "15 (VIP, backend) pairs, more than the 12") || !strings.Contains(err.Error(), "restart") {
		t.Errorf("15 pairs into 12: %v", err)
	}
	if err := (&Daemon{dp: capacityDP{}}).fitsMaps(cfg(0, 0)); err != nil {
		t.Errorf("no pairs: %v", err)
	}
}
