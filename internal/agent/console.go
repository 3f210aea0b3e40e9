package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
)

// consoleLoop long-polls console requests and serves each in its own
// goroutine: the agent dials back to the server (it never listens) and
// relays the driver's serial console, or sends its log tail.
func (a *Agent) consoleLoop(ctx context.Context) {
	if _, ok := a.cfg.Driver.(hypervisor.Console); !ok {
		return // nothing to serve; requests time out on the server with a clear message
	}
	bo := newBackoff(200*time.Millisecond, 10*time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, a.cfg.PollWait+15*time.Second)
		var rs api.ConsoleRequests
		err := a.client.do(pctx, http.MethodGet, fmt.Sprintf("%s/consoles?wait=%s", api.AgentPrefix, a.cfg.PollWait), nil, &rs)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.log.Debug("console poll failed", "err", err)
			if sleepCtx(ctx, bo.next()) != nil {
				return
			}
			continue
		}
		bo.reset()
		for _, req := range rs.Items {
			go a.serveConsole(ctx, req)
		}
	}
}

// serveConsole dials the session's websocket and serves it.
func (a *Agent) serveConsole(ctx context.Context, req api.ConsoleRequest) {
	con := a.cfg.Driver.(hypervisor.Console)
	id := vmID(req.Project, req.Name)
	u := strings.Replace(a.base, "https://", "wss://", 1) + api.AgentPrefix + "/consoles/" + url.PathEscape(req.ID)
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	ws, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: a.client.http})
	cancel()
	if err != nil {
		a.log.Warn("console: dialling the server failed", "vm", req.Project+"/"+req.Name, "err", err)
		return
	}
	defer ws.CloseNow()
	switch req.Kind {
	case api.ConsoleLogKind:
		b, err := con.ConsoleLog(ctx, id, req.Tail)
		if err != nil {
			ws.Close(websocket.StatusInternalError, truncateReason(err.Error()))
			return
		}
		if err := ws.Write(ctx, websocket.MessageBinary, b); err == nil {
			ws.Close(websocket.StatusNormalClosure, "")
		}
	default:
		c, err := con.OpenConsole(ctx, id)
		if err != nil {
			ws.Close(websocket.StatusInternalError, truncateReason(err.Error()))
			return
		}
		a.log.Info("console attached", "vm", req.Project+"/"+req.Name)
		relayConsole(ctx, ws, c)
		a.log.Info("console detached", "vm", req.Project+"/"+req.Name)
	}
}

// relayConsole copies between the websocket and the console until either
// ends.
func relayConsole(ctx context.Context, ws *websocket.Conn, c io.ReadWriteCloser) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer cancel()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if werr := ws.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer cancel()
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if _, err := c.Write(data); err != nil {
				return
			}
		}
	}()
	<-ctx.Done()
	c.Close()
	ws.Close(websocket.StatusNormalClosure, "console closed")
}

// truncateReason fits a close reason in a control frame (123 bytes).
func truncateReason(s string) string {
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
