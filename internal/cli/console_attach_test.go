package cli

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for one writer and one reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAttachAwaitsASlowGuestsAnswer: with commands piped in, attach
// waits for the guest's answer even when a busy host makes the guest
// take longer than the quiet period to print anything (the README tour
// under load saw the console return before the guest's uname answered).
func TestAttachAwaitsASlowGuestsAnswer(t *testing.T) {
	cli, guest := net.Pipe()
	go func() {
		defer guest.Close()
		line, err := bufio.NewReader(guest).ReadString('\n')
		if err != nil {
			return
		}
		time.Sleep(quietAfterInput + 500*time.Millisecond) // a guest slower than the quiet period
		if _, err := guest.Write([]byte("answer to " + line)); err != nil {
			return
		}
		time.Sleep(maxAnswerWait) // stays connected and quiet
	}()
	var out lockedBuffer
	if err := attach(context.Background(), cli, strings.NewReader("uname -sr\n"), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "answer to uname -sr") {
		t.Fatalf("attach returned before the guest answered; printed %q", out.String())
	}
}
