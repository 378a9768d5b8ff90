package admin

import (
	"bufio"
	"net/http"
	"time"

	"github.com/l4lb/l4lb/pkg/monitor"
)

// MonitorNode is a Node whose data plane reports events (drops with their reason, sampled
// flow decisions). Monitor returns nil when the data plane in use reports none.
type MonitorNode interface {
	Monitor() *monitor.Hub
}

// monitorHeartbeat is how often an idle stream carries a blank line: it shows the client
// the node is there, and shows the node a client that has gone.
var monitorHeartbeat = 5 * time.Second

// monitorWriteTimeout bounds one write to a stream: a client that stops reading is cut
// off then, and loses (counted) what came meanwhile.
const monitorWriteTimeout = 30 * time.Second

// maxBatch is how many queued events a stream writes before it flushes.
const maxBatch = 64

// noMonitor is the answer of a node whose data plane reports no events.
const noMonitor = "no monitor: this node's data plane reports no events"

// registerMonitor adds
//
//	GET /v1/monitor?vip=&reason=&src=&type=&sample=   events as NDJSON, until the client goes
//	GET /v1/monitor/recent                          the last drops and the loss counters
//
// The stream needs the token: its events carry the first bytes of packets, which may be
// a client's payload. The recent drops are a read like /v1/state, open like it, and for
// that reason carry no packet bytes. When the node has no monitor the stream answers 404
// with a message; the recent drops answer {"available": false, ...}, so that the status
// page, which polls them, does not fill the browser's console with failed requests.
func (s *Server) registerMonitor() {
	s.mux.HandleFunc("GET /v1/monitor", s.auth(s.monitorStream))
	s.mux.HandleFunc("GET /v1/monitor/recent", s.monitorRecent)
}

func (s *Server) hub() *monitor.Hub {
	mn, ok := s.node.(MonitorNode)
	if !ok {
		return nil
	}
	return mn.Monitor()
}

// RecentView is GET /v1/monitor/recent's answer.
type RecentView struct {
	// Available is false when the node has no monitor; Note then says so.
	Available bool   `json:"available"`
	Note      string `json:"note,omitempty"`
	// Drops are the last drops, oldest first, without their packet bytes.
	Drops []monitor.Event `json:"drops"`
	// Lost counts the events that reached no watcher since the node started.
	Lost monitor.Lost `json:"lost"`
	// Watchers is the number of streams open.
	Watchers int `json:"watchers"`
}

func (s *Server) monitorRecent(w http.ResponseWriter, _ *http.Request) {
	hub := s.hub()
	if hub == nil {
		writeJSON(w, 200, RecentView{Note: noMonitor, Drops: []monitor.Event{}})
		return
	}
	drops := hub.RecentDrops()
	for i := range drops {
		drops[i].Data = nil
	}
	writeJSON(w, 200, RecentView{Available: true, Drops: drops, Lost: hub.Lost(), Watchers: hub.Watchers()})
}

// monitorStream writes the events that pass the query's filter, one JSON object a line,
// flushed as they come, and a blank line when idle for monitorHeartbeat. It returns when
// the client goes away or the hub closes.
func (s *Server) monitorStream(w http.ResponseWriter, r *http.Request) {
	hub := s.hub()
	if hub == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": noMonitor})
		return
	}
	f, err := monitor.ParseFilter(r.URL.Query())
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	rc := http.NewResponseController(w)
	// The server's write timeout is for answers of bounded size: a stream has no end, so
	// each of its writes gets a deadline instead. (Once the request is read, net/http
	// clears the read deadline itself to notice the client leave.)
	sub := hub.Subscribe(f)
	defer sub.Close()
	s.log.Info("monitor stream opened", "client", r.RemoteAddr, "filter", f.Query().Encode())
	defer func() { s.log.Info("monitor stream closed", "client", r.RemoteAddr, "lost", sub.Lost()) }()

	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	bw := bufio.NewWriter(w)
	flush := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(monitorWriteTimeout))
		return bw.Flush() == nil && rc.Flush() == nil
	}
	w.WriteHeader(http.StatusOK)
	if !flush() {
		return
	}
	idle := time.NewTicker(monitorHeartbeat)
	defer idle.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-idle.C:
			if bw.WriteByte('\n') != nil || !flush() {
				return
			}
		case e, ok := <-sub.Events():
			if !ok {
				return // the hub closed: the node is stopping
			}
			// What is queued already goes in the same write.
			for n := 0; ok; n++ {
				_ = rc.SetWriteDeadline(time.Now().Add(monitorWriteTimeout))
				if monitor.WriteJSON(bw, e) != nil {
					return
				}
				if n == maxBatch {
					break
				}
				select {
				case e, ok = <-sub.Events():
				default:
					ok = false
				}
			}
			if !flush() {
				return
			}
			idle.Reset(monitorHeartbeat)
		}
	}
}
