package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

// addVMOpCommands adds `snapshot` and, under `vm`, `console` and `disk`.
func (a *app) addVMOpCommands(root *cobra.Command) {
	root.AddCommand(a.snapshotCmd())
	for _, c := range root.Commands() {
		if c.Name() == "vm" {
			c.AddCommand(a.vmConsoleCmd(), group("disk", "Hot-plug, unplug and grow the disks of a VM", a.diskAddCmd(), a.diskRemoveCmd(), a.diskResizeCmd()))
		}
	}
}

func (a *app) snapshotCmd() *cobra.Command {
	return group("snapshot", "Create, list, revert and delete snapshots of a VM",
		a.snapshotCreateCmd(), a.snapshotListCmd(), a.snapshotRevertCmd(), a.snapshotDeleteCmd())
}

func (a *app) snapshotTable(w io.Writer, items []model.Snapshot) {
	now := a.env.now()
	row(w, "NAME", "VM", "PHASE", "MEMORY", "HOST", "AGE", "ERROR")
	for _, s := range items {
		mem := "no"
		if s.Memory {
			mem = "yes"
		}
		row(w, s.Name, s.VM, s.Phase, mem, orDash(s.Host), age(now, s.CreatedAt), orDash(s.Error))
	}
}

// waitSnap waits (unless told not to) until the snapshot leaves phase busy.
func (a *app) waitSnap(cmd *cobra.Command, c *client.Client, vm string, s *model.Snapshot, busy model.SnapshotPhase, wait waitOpts, timeout time.Duration) (*model.Snapshot, error) {
	if !wait.enabled() || s == nil {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	out, err := c.WaitSnapshot(ctx, a.cfg.Project, vm, s.Name, busy)
	if errors.Is(err, client.ErrSnapshotFailed) {
		return out, fmt.Errorf("snapshot %s of %s: %s", s.Name, vm, out.Error)
	}
	return out, err
}

func (a *app) snapshotCreateCmd() *cobra.Command {
	var memory bool
	var noWait waitOpts
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create VM NAME",
		Short: "Snapshot a VM's disks (crash-consistent), with --memory its running state too",
		Example: `  vpool snapshot create web1 before-upgrade
  vpool snapshot create web1 warm --memory`,
		Args: exactArgs(2, "a VM name and a snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			s, err := c.CreateSnapshot(cmd.Context(), a.cfg.Project, args[0], api.SnapshotCreateRequest{Name: args[1], Memory: memory})
			if err != nil {
				return err
			}
			if s, err = a.waitSnap(cmd, c, args[0], s, model.SnapshotPending, noWait, timeout); err != nil {
				return err
			}
			return a.print(cmd, s, func(w io.Writer) { a.snapshotTable(w, []model.Snapshot{*s}) })
		},
	}
	cmd.Flags().BoolVar(&memory, "memory", false, "keep the running state too (the VM must run); a revert resumes it")
	noWait.flags(cmd, "the snapshot is ready")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long to wait")
	return cmd
}

func (a *app) snapshotListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list VM",
		Short: "List a VM's snapshots",
		Args:  exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			items, err := c.ListSnapshots(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, items, func(w io.Writer) { a.snapshotTable(w, items) })
		},
	}
}

func (a *app) snapshotRevertCmd() *cobra.Command {
	var noWait waitOpts
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "revert VM NAME",
		Short: "Revert a VM to a snapshot (what it wrote since is lost)",
		Args:  exactArgs(2, "a VM name and a snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			s, err := c.RevertSnapshot(cmd.Context(), a.cfg.Project, args[0], args[1])
			if err != nil {
				return err
			}
			if _, err := a.waitSnap(cmd, c, args[0], s, model.SnapshotReverting, noWait, timeout); err != nil {
				return err
			}
			fmt.Fprintf(outw(cmd), "VM %s reverted to snapshot %s\n", args[0], args[1])
			return nil
		},
	}
	noWait.flags(cmd, "the VM is reverted")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long to wait")
	return cmd
}

func (a *app) snapshotDeleteCmd() *cobra.Command {
	var noWait waitOpts
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "delete VM NAME",
		Short: "Delete a snapshot",
		Args:  exactArgs(2, "a VM name and a snapshot name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteSnapshot(cmd.Context(), a.cfg.Project, args[0], args[1]); err != nil {
				return err
			}
			if _, err := a.waitSnap(cmd, c, args[0], &model.Snapshot{Meta: model.Meta{Name: args[1]}}, model.SnapshotDeleting, noWait, timeout); err != nil {
				return err
			}
			fmt.Fprintf(outw(cmd), "snapshot %s of %s deleted\n", args[1], args[0])
			return nil
		},
	}
	noWait.flags(cmd, "the snapshot is deleted")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long to wait")
	return cmd
}

// --- disks ---

func (a *app) diskAddCmd() *cobra.Command {
	var size, name, pool, tier string
	var encrypted bool
	cmd := &cobra.Command{
		Use:     "add VM",
		Short:   "Add an empty disk to a VM (hot-plugged when it runs)",
		Example: `  vpool vm disk add web1 --size 10GiB --name data`,
		Args:    exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sz, ok, err := sizeFlag(cmd, "size")
			if err != nil {
				return err
			}
			if !ok {
				return usagef("vm disk add: --size is required (e.g. --size 10GiB)")
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			vm, err := c.AddDisk(cmd.Context(), a.cfg.Project, args[0], api.DiskAddRequest{Name: name, Size: sz, Pool: pool, Tier: tier, Encrypted: encrypted})
			if err != nil {
				return err
			}
			return a.print(cmd, vm, func(w io.Writer) { a.diskTable(w, vm) })
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "disk size, with a unit")
	cmd.Flags().StringVar(&name, "name", "", "disk name (default disk<N>)")
	cmd.Flags().StringVar(&pool, "pool", "", "storage pool")
	cmd.Flags().StringVar(&tier, "tier", "", "storage tier")
	cmd.Flags().BoolVar(&encrypted, "encrypted", false, "LUKS-encrypt the disk")
	return cmd
}

func (a *app) diskRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove VM DISK",
		Short: "Unplug a disk from a VM and delete it",
		Args:  exactArgs(2, "a VM name and a disk name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			vm, err := c.RemoveDisk(cmd.Context(), a.cfg.Project, args[0], args[1])
			if err != nil {
				return err
			}
			return a.print(cmd, vm, func(w io.Writer) { a.diskTable(w, vm) })
		},
	}
}

func (a *app) diskResizeCmd() *cobra.Command {
	var wait waitOpts
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "resize VM DISK --size SIZE",
		Short: "Grow a disk (live when the VM runs; disks never shrink)",
		Long: `Grow a disk to --size. A running VM's guest sees the new size at once
(QMP block_resize); its file system is the guest's to grow (growpart and
resize2fs, or cloud-init's growpart at the next boot). Waits until the host
has grown the disk unless --no-wait.`,
		Example: `  vpool vm disk resize web1 root --size 20GiB`,
		Args:    exactArgs(2, "a VM name and a disk name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sz, ok, err := sizeFlag(cmd, "size")
			if err != nil {
				return err
			}
			if !ok {
				return usagef("vm disk resize: --size is required (e.g. --size 20GiB)")
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			vm, err := c.ResizeDisk(cmd.Context(), a.cfg.Project, args[0], args[1], sz)
			if err != nil {
				return err
			}
			if wait.enabled() && vm.Status.Host != "" {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				vm, err = c.WaitVM(ctx, a.cfg.Project, args[0], func(v *model.VM) bool {
					return v == nil || diskStatusSize(v, args[1]) >= sz || v.Status.LastError != ""
				}, nil)
				if err != nil {
					return fmt.Errorf("vm disk resize: %w", err)
				}
				if vm == nil {
					return fmt.Errorf("vm disk resize: VM %s went away", args[0])
				}
				if diskStatusSize(vm, args[1]) < sz {
					return fmt.Errorf("vm disk resize: %s", vm.Status.LastError)
				}
			}
			return a.print(cmd, vm, func(w io.Writer) { a.diskTable(w, vm) })
		},
	}
	cmd.Flags().String("size", "", "the new size, with a unit (larger than now)")
	wait.flags(cmd, "the host has grown the disk")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long to wait")
	return cmd
}

func diskStatusSize(vm *model.VM, disk string) model.Bytes {
	for _, d := range vm.Status.Disks {
		if d.Name == disk {
			return d.Size
		}
	}
	return 0
}

func (a *app) diskTable(w io.Writer, vm *model.VM) {
	row(w, "VM", "DISK", "SIZE", "POOL", "TIER", "ENCRYPTED")
	for _, d := range vm.Spec.Disks {
		row(w, vm.Name, d.Name, d.Size, orDash(d.Pool), orDash(d.Tier), d.Encrypted)
	}
}

// --- console ---

func (a *app) vmConsoleCmd() *cobra.Command {
	var showLog bool
	var tail string
	var settle time.Duration
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a VM's serial console (Ctrl-] or end of input detaches), or print its log",
		Long: `Attach to a VM's serial console: what you type goes to the guest, what it
prints comes back; Ctrl-] (or the end of input) detaches. With input piped
in, vpool first waits for the console to settle (the guest's boot output to
stop, up to --settle), types the input, and returns once the guest's answer
has been quiet for a moment. --log prints this boot's output and exits.`,
		Example: `  vpool vm console web1
  echo 'uname -a' | vpool vm console web1
  vpool vm console web1 --log`,
		Args: exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if showLog {
				n := 0
				if sz, ok, err := sizeFlag(cmd, "tail"); err != nil {
					return err
				} else if ok {
					n = int(sz)
				}
				l, err := c.ConsoleLog(cmd.Context(), a.cfg.Project, args[0], n)
				if err != nil {
					return err
				}
				_, err = io.WriteString(outw(cmd), l.Log)
				return err
			}
			if !isTerminal(cmd.InOrStdin()) && settle > 0 {
				// Commands piped in go to a guest that is done booting.
				if err := a.settleConsole(cmd.Context(), c, args[0], settle); err != nil {
					return err
				}
			}
			conn, err := c.Console(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(errw(cmd), "attached to the console of %s (Ctrl-] to detach)\n", args[0])
			return attach(cmd.Context(), conn, cmd.InOrStdin(), outw(cmd))
		},
	}
	cmd.Flags().BoolVar(&showLog, "log", false, "print the console log of the current boot and exit")
	cmd.Flags().DurationVar(&settle, "settle", time.Minute, "with input piped in: wait up to this long for the guest's console to go quiet (its boot to end) before typing; 0 types at once")
	cmd.Flags().StringVar(&tail, "tail", "", "with --log: at most this much of the end (e.g. 16KiB)")
	return cmd
}

// settleConsole waits until the VM's console log has settled (settled),
// or max has passed.
func (a *app) settleConsole(ctx context.Context, c *client.Client, vm string, max time.Duration) error {
	deadline := time.Now().Add(max)
	last, since := "", time.Now()
	for time.Now().Before(deadline) {
		l, err := c.ConsoleLog(ctx, a.cfg.Project, vm, 4096)
		if err != nil {
			return err
		}
		if l.Log != last {
			last, since = l.Log, time.Now()
		} else if settled(last, time.Since(since)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// settled reports whether a console whose log is log and has not grown
// for quiet is done booting: a prompt waits on a line of its own without
// a newline ("/ # ", "login: "), quiet for promptQuiet; a log that ends
// a line may be a boot pausing between two messages (CI's README tour:
// a loaded guest paused over a second before its init printed, and the
// typed command lost its first characters), so it must stay quiet for
// lineQuiet.
func settled(log string, quiet time.Duration) bool {
	switch {
	case log == "":
		return false
	case !strings.HasSuffix(log, "\n") && !strings.HasSuffix(log, "\r"):
		return quiet >= promptQuiet
	default:
		return quiet >= lineQuiet
	}
}

const (
	promptQuiet = time.Second
	lineQuiet   = 5 * time.Second
)

// detachKey (Ctrl-]) ends an interactive console session.
const detachKey = 0x1d

// attach copies in to conn and conn to out until conn ends, in ends, or
// the detach key is typed. When in ends (commands piped in), the guest's
// answer is awaited: attach returns once the guest printed something
// after the input and then stayed quiet for quietAfterInput, or after
// maxAnswerWait.
func attach(ctx context.Context, conn io.ReadWriteCloser, in io.Reader, out io.Writer) error {
	defer conn.Close()
	var last atomic.Int64 // unix nanoseconds of the last output
	last.Store(time.Now().UnixNano())
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(writerFunc(func(b []byte) (int, error) {
			last.Store(time.Now().UnixNano())
			return out.Write(b)
		}), conn)
		done <- err
	}()
	go func() {
		sent, err := copyInput(conn, in)
		if err == nil || errors.Is(err, io.EOF) {
			// Await the guest's answer to what was typed: output after the
			// input ended, then quiet. A guest slowed by a busy host may
			// take seconds to answer; an answer only its echo began is
			// awaited too.
			end := time.Now()
			for sent > 0 && time.Since(end) < maxAnswerWait {
				l := time.Unix(0, last.Load())
				if l.After(end) && time.Since(l) >= quietAfterInput {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			err = nil
		}
		done <- err
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-done:
		if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
			return fmt.Errorf("console: %w", err)
		}
		return nil
	}
}

const (
	quietAfterInput = time.Second
	maxAnswerWait   = 20 * time.Second
)

// copyInput copies in to conn until in ends or the detach key comes,
// and says how many bytes it sent.
func copyInput(conn io.Writer, in io.Reader) (int64, error) {
	buf := make([]byte, 4096)
	var sent int64
	for {
		n, err := in.Read(buf)
		for i := 0; i < n; i++ {
			if buf[i] == detachKey {
				n = i
				err = io.EOF
			}
		}
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return sent, werr
			}
			sent += int64(n)
		}
		if err != nil {
			return sent, err
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// awaitResize waits for the host's answer to a resize of a placed VM: a
// change that needs a restart is refused (the VM keeps its size) unless
// --restart was given.
func (a *app) awaitResize(cmd *cobra.Command, c *client.Client, vm *model.VM) (*model.VM, error) {
	op := vm.Status.Resize
	if op == nil || op.Phase != model.ResizePending {
		return vm, nil
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), defaultTimeout)
	defer cancel()
	out, err := c.WaitVM(ctx, a.cfg.Project, vm.Name, func(v *model.VM) bool {
		return v == nil || v.Status.Resize == nil || v.Status.Resize.ID != op.ID || v.Status.Resize.Phase != model.ResizePending
	}, nil)
	if err != nil {
		return vm, err
	}
	if out == nil {
		return vm, fmt.Errorf("vm resize: VM %s went away", vm.Name)
	}
	if r := out.Status.Resize; r != nil && r.ID == op.ID && r.Phase == model.ResizeRefused {
		return out, fmt.Errorf("vm resize: %s", r.Message)
	}
	return out, nil
}

// cloudInitOpts are the `vm create` flags of the cloud-init NoCloud seed.
type cloudInitOpts struct {
	hostname       string
	sshKeys        []string // files
	userData       string   // file
	passwordFile   string
	passwordPrompt bool
}

func (o *cloudInitOpts) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.hostname, "hostname", "", "cloud-init: the guest's host name (default: the VM name)")
	f.StringArrayVar(&o.sshKeys, "ssh-key", nil, "cloud-init: a public key file (each line one key); repeatable")
	f.StringVar(&o.userData, "user-data", "", "cloud-init: a user-data file (#cloud-config or a script)")
	f.StringVar(&o.passwordFile, "password-file", "", "cloud-init: the default user's password, the first line of this file (only its SHA-512 crypt hash is sent)")
	f.BoolVar(&o.passwordPrompt, "password-prompt", false, "cloud-init: ask for the default user's password (only its SHA-512 crypt hash is sent)")
}

// build returns the seed, or nil when no cloud-init flag was given.
func (o *cloudInitOpts) build(cmd *cobra.Command) (*model.CloudInit, error) {
	pw, err := readPassword(cmd, o.passwordFile, o.passwordPrompt)
	if err != nil {
		return nil, err
	}
	if o.hostname == "" && len(o.sshKeys) == 0 && o.userData == "" && pw == "" {
		return nil, nil
	}
	ci := &model.CloudInit{Hostname: o.hostname}
	for _, f := range o.sshKeys {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, usagef("--ssh-key: %v", err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				if err := model.CheckSSHPublicKey(line); err != nil {
					return nil, usagef("--ssh-key %s line %d: %v", f, i+1, err)
				}
				ci.SSHKeys = append(ci.SSHKeys, line)
			}
		}
	}
	if o.userData != "" {
		b, err := os.ReadFile(o.userData)
		if err != nil {
			return nil, usagef("--user-data: %v", err)
		}
		ci.UserData = string(b)
	}
	if pw != "" {
		if ci.UserData, err = combineUserData(passwordCloudConfig(sha512Crypt(pw, newSalt())), ci.UserData); err != nil {
			return nil, err
		}
	}
	return ci, nil
}
