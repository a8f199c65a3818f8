// Command supervisor runs a throw-away Kubernetes control plane (etcd and kube-apiserver)
// around one command, and offers a fault-control socket to that command. It is started by
// scripts/control-plane, which builds the binaries; it uses only the Go standard library.
//
//	supervisor run --bin-dir DIR [--etcd-members N] [--keep-state] [--label TEXT] -- COMMAND [ARGS...]
//	supervisor ctl [--socket PATH] REQUEST...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// exitSetup is the exit status when the control plane itself could not be set up.
const exitSetup = 125

// statePrefix names the state directories in $TMPDIR.
const statePrefix = "lockheed-control-plane-"

// removeStaleStateDirs removes the state directories of supervisors that were SIGKILLed (and
// so could not clean up): those whose supervisor.pid names a process that no longer exists.
func removeStaleStateDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), statePrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "supervisor.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: supervisor run|ctl ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(runMain(os.Args[2:]))
	case "ctl":
		os.Exit(ctlMain(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "supervisor: unknown mode %q (run or ctl)\n", os.Args[1])
		os.Exit(2)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "control-plane: "+format+"\n", args...)
}

// signalStatus is the shell's exit status for death by sig.
func signalStatus(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

func runMain(argv []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	binDir := fs.String("bin-dir", "", "directory holding etcd and kube-apiserver")
	members := fs.Int("etcd-members", 1, "number of etcd members")
	keep := fs.Bool("keep-state", false, "keep the state directory (logs, data, certificates) afterwards")
	label := fs.String("label", "", "versions to print in the ready line")
	if err := fs.Parse(argv); err != nil {
		return 2
	}
	command := fs.Args()
	if len(command) == 0 {
		logf("no command given (usage: run --bin-dir DIR [--etcd-members N] -- COMMAND [ARGS...])")
		return 2
	}
	if *members < 1 || *members > 9 {
		logf("--etcd-members must be between 1 and 9, not %d", *members)
		return 2
	}
	if *binDir == "" {
		logf("--bin-dir is required")
		return 2
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(*binDir, b)); err != nil {
			logf("missing binary: %v", err)
			return exitSetup
		}
	}

	// The command is looked up on the PATH it will have before anything is started, so that
	// a misspelt command costs no start-up.
	prependPath(*binDir)
	path, err := exec.LookPath(command[0])
	if err != nil {
		logf("%v", err)
		return 127
	}

	// Catch the signals before anything is started, so that nothing escapes the clean-up.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	removeStaleStateDirs()
	stateDir, err := os.MkdirTemp("", statePrefix)
	if err != nil {
		logf("creating the state directory: %v", err)
		return exitSetup
	}
	pidFile := filepath.Join(stateDir, "supervisor.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		logf("%v", err)
		_ = os.RemoveAll(stateDir)
		return exitSetup
	}
	cleanup := func() {
		if *keep {
			_ = os.Remove(pidFile) // a kept directory is not stale: leave it alone
			logf("state kept in %s", stateDir)
			return
		}
		if err := os.RemoveAll(stateDir); err != nil {
			logf("removing %s: %v", stateDir, err)
		}
	}

	cl, err := newCluster(stateDir, *binDir, *members, os.Stderr)
	if err != nil {
		logf("%v", err)
		cleanup()
		return exitSetup
	}
	defer cl.killAll()

	// Start-up, which a signal interrupts.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type startResult struct {
		etcdTime, apiTime time.Duration
		err               error
	}
	started := make(chan startResult, 1)
	t0 := time.Now()
	go func() {
		var r startResult
		for attempt := 1; attempt <= 3; attempt++ {
			if r.err = cl.configure(); r.err != nil {
				break
			}
			r.etcdTime, r.apiTime, r.err = cl.startAll(ctx)
			if !errors.Is(r.err, errPortTaken) {
				break
			}
			logf("a chosen port was taken by another process; retrying with new ports")
			if r.err = cl.resetForRetry(); r.err != nil {
				break
			}
			r.err = errPortTaken
		}
		started <- r
	}()
	var res startResult
	select {
	case sig := <-sigs:
		logf("%v during start-up: stopping", sig)
		cancel()
		cl.killAll()
		cleanup()
		return signalStatus(sig)
	case res = <-started:
	}
	if res.err != nil {
		logf("start-up failed: %v", res.err)
		cl.killAll()
		cleanup()
		return exitSetup
	}

	if err := cl.pki.writeKubeconfigs(stateDir, cl.apiURL); err != nil {
		logf("writing kubeconfigs: %v", err)
		cl.killAll()
		cleanup()
		return exitSetup
	}
	sock := filepath.Join(stateDir, "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		logf("control socket: %v", err)
		cl.killAll()
		cleanup()
		return exitSetup
	}
	_ = os.Chmod(sock, 0o600)
	go cl.serveControl(ctx, ln)

	what := *label
	if what == "" {
		what = "control plane"
	}
	logf("%s (%d etcd member%s) ready in %.1fs (etcd %.1fs, kube-apiserver %.1fs) at %s; state %s",
		what, *members, map[bool]string{true: "", false: "s"}[*members == 1], time.Since(t0).Seconds(),
		res.etcdTime.Seconds(), res.apiTime.Seconds(), cl.apiURL, stateDir)

	status := runCommand(cl, path, command, *binDir, stateDir, *members, sigs)

	_ = ln.Close()
	cancel()
	cl.killAll()
	cleanup()
	return status
}

// commandEnv sets the variables the command sees (in the supervisor's own environment too,
// so that the command's name is looked up on the new PATH).
func commandEnv(cl *cluster, binDir, stateDir string, members int) {
	set := func(k, v string) { _ = os.Setenv(k, v) }
	set("KUBECONFIG", cl.pki.kubeconfigPath["admin"])
	for _, u := range users {
		set(u.EnvVar, cl.pki.kubeconfigPath[u.Name])
	}
	set("LOCKHEED_CONTROL_PLANE", stateDir)
	set("LOCKHEED_CONTROL_PLANE_BIN", binDir)
	set("LOCKHEED_ETCD_MEMBERS", strconv.Itoa(members))
}

// prependPath puts binDir first on PATH, so that "kubectl" is the one built with the server
// and not an older one the machine has installed.
func prependPath(binDir string) {
	if p := os.Getenv("PATH"); p != "" {
		_ = os.Setenv("PATH", binDir+string(os.PathListSeparator)+p)
	} else {
		_ = os.Setenv("PATH", binDir)
	}
}

// ttyForeground reports whether stdin is a terminal whose foreground process group is ours:
// then the command is given the terminal, as a shell gives it to a foreground job, so that it
// can read from it and Ctrl-C reaches it directly.
func ttyForeground() bool {
	var pgrp int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp)))
	return errno == 0 && int(pgrp) == syscall.Getpgrp()
}

func setTTYForeground(pgrp int) {
	p := int32(pgrp)
	_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&p)))
}

// runCommand runs the command in its own process group, forwards SIGINT, SIGTERM and SIGHUP
// to that group (SIGKILL after a second signal or 10 s), and returns its exit status.
func runCommand(cl *cluster, path string, command []string, binDir, stateDir string, members int, sigs chan os.Signal) int {
	commandEnv(cl, binDir, stateDir, members)
	cmd := exec.Command(path, command[1:]...)
	cmd.Args[0] = command[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = os.Environ()
	foreground := ttyForeground()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if foreground {
		signal.Ignore(syscall.SIGTTOU, syscall.SIGTTIN)
		cmd.SysProcAttr.Foreground = true
		cmd.SysProcAttr.Ctty = 0
	}
	errc := make(chan error, 1)
	cl.spawn <- spawnRequest{cmd: cmd, errc: errc}
	if err := <-errc; err != nil {
		logf("starting %s: %v", command[0], err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 127
		}
		return 126
	}
	pgid := cmd.Process.Pid
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	var received os.Signal
	var escalate <-chan time.Time
	var werr error
loop:
	for {
		select {
		case werr = <-waited:
			break loop
		case sig := <-sigs:
			if received != nil {
				logf("%v again: killing the command", sig)
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				continue
			}
			received = sig
			logf("%v: passing it on to the command", sig)
			_ = syscall.Kill(-pgid, sig.(syscall.Signal))
			escalate = time.After(10 * time.Second)
		case <-escalate:
			logf("the command did not end within 10 s of %v: killing it", received)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
	if foreground {
		setTTYForeground(syscall.Getpgrp())
	}
	// Whatever the command left behind in its process group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)

	if werr == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
		return ee.ExitCode()
	}
	logf("waiting for the command: %v", werr)
	if received != nil {
		return signalStatus(received)
	}
	return 1
}
