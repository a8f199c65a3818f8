package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// The control protocol: a client connects to the unix socket, writes one request line
// ("verb [component] [option]") and reads one JSON line back; it may send further requests
// on the same connection. Every response has "ok"; failures carry "error".
const protocolHelp = `requests (one line each; one JSON line back):
  status                 every component: pid, state, ports, starts
  pid COMPONENT          {"ok":true,"pid":N} while it runs (or is stopped)
  kill COMPONENT         SIGKILL its process group and wait until it is gone
  term COMPONENT         SIGTERM it, wait up to 30 s, then SIGKILL
  stop COMPONENT         SIGSTOP (it stays alive but answers nothing)
  cont COMPONENT         SIGCONT after stop
  start COMPONENT [nowait]  start it again, same flags, ports and data dir; waits until
                         ready (etcd: /health true; apiserver: /readyz ok) unless nowait
  restart COMPONENT      kill (if running) then start
  wait COMPONENT         wait until it is ready (up to 120 s)
  etcd-leader            which etcd member leads (from each running member's /metrics)
  ping                   {"ok":true}
  help                   this text
components: apiserver (or kube-apiserver), etcd-0 .. etcd-N-1 (etcd = etcd-0 with one member)`

type componentStatus struct {
	Name       string         `json:"name"`
	PID        int            `json:"pid"`
	State      string         `json:"state"`
	ExitStatus string         `json:"exit_status,omitempty"`
	Starts     int            `json:"starts"`
	Ports      map[string]int `json:"ports"`
	Log        string         `json:"log"`
}

func (c *cluster) statusOf(comp *component) componentStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	pid := comp.pid
	if comp.state == stateExited || comp.state == stateNew {
		pid = 0
	}
	return componentStatus{
		Name: comp.name, PID: pid, State: comp.state, ExitStatus: comp.exitStatus,
		Starts: comp.starts, Ports: comp.ports, Log: comp.logPath,
	}
}

// serveControl accepts connections on the unix socket until ln is closed.
func (c *cluster) serveControl(ctx context.Context, ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			fmt.Fprintf(c.stderr, "control-plane: control socket: %v\n", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go c.serveConn(ctx, conn)
	}
}

func (c *cluster) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	enc := json.NewEncoder(conn) // writes one line per value
	for {
		line, err := r.ReadString('\n')
		if strings.TrimSpace(line) != "" {
			if werr := enc.Encode(c.handle(ctx, line)); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func fail(err error) map[string]any {
	return map[string]any{"ok": false, "error": err.Error()}
}

// handle runs one request and returns its response.
func (c *cluster) handle(ctx context.Context, line string) map[string]any {
	words := strings.Fields(line)
	verb := strings.ToLower(words[0])
	args := words[1:]
	switch verb {
	case "ping":
		return map[string]any{"ok": true}
	case "help":
		return map[string]any{"ok": true, "help": protocolHelp}
	case "status":
		var comps []componentStatus
		for _, m := range c.etcd {
			comps = append(comps, c.statusOf(m))
		}
		comps = append(comps, c.statusOf(c.apiserver))
		return map[string]any{
			"ok": true, "state_dir": c.stateDir, "bin_dir": c.binDir, "apiserver_url": c.apiURL,
			"etcd_members": len(c.etcd), "supervisor_pid": os.Getpid(), "components": comps,
		}
	case "etcd-leader":
		m, err := c.etcdLeader(ctx)
		if err != nil {
			return fail(err)
		}
		st := c.statusOf(m)
		return map[string]any{"ok": true, "leader": m.name, "pid": st.PID}
	}

	verbs := map[string]bool{"pid": true, "kill": true, "term": true, "stop": true, "cont": true, "start": true, "restart": true, "wait": true}
	if !verbs[verb] {
		return fail(fmt.Errorf("unknown request %q (send \"help\")", verb))
	}
	if len(args) < 1 {
		return fail(fmt.Errorf("%s needs a component, e.g. %q", verb, verb+" apiserver"))
	}
	comp, err := c.component(args[0])
	if err != nil {
		return fail(err)
	}
	nowait := len(args) > 1 && args[1] == "nowait"
	if len(args) > 2 || (len(args) == 2 && (!nowait || (verb != "start" && verb != "restart"))) {
		return fail(fmt.Errorf("unexpected arguments for %s: %q", verb, strings.Join(args[1:], " ")))
	}
	ok := func(pid int, extra ...any) map[string]any {
		resp := map[string]any{"ok": true, "component": comp.name, "pid": pid}
		for i := 0; i+1 < len(extra); i += 2 {
			resp[extra[i].(string)] = extra[i+1]
		}
		return resp
	}

	if verb == "pid" {
		st := c.statusOf(comp)
		if st.PID == 0 {
			return fail(fmt.Errorf("%s is not running (%s)", comp.name, st.State))
		}
		return ok(st.PID, "state", st.State)
	}
	if verb == "wait" {
		t0 := time.Now()
		if err := c.waitReady(ctx, comp); err != nil {
			return fail(err)
		}
		return ok(c.statusOf(comp).PID, "ready_ms", time.Since(t0).Milliseconds())
	}

	comp.opMu.Lock()
	defer comp.opMu.Unlock()
	switch verb {
	case "kill":
		pid, err := c.kill(comp)
		if err != nil {
			return fail(err)
		}
		return ok(pid)
	case "term":
		pid, err := c.term(comp)
		if err != nil {
			return fail(err)
		}
		return ok(pid)
	case "stop":
		pid, err := c.signalGroup(comp, syscall.SIGSTOP)
		if err != nil {
			return fail(err)
		}
		return ok(pid, "state", stateStopped)
	case "cont":
		pid, err := c.signalGroup(comp, syscall.SIGCONT)
		if err != nil {
			return fail(err)
		}
		return ok(pid, "state", stateRunning)
	case "restart", "start":
		if verb == "restart" {
			if st := c.statusOf(comp); st.State == stateRunning || st.State == stateStopped {
				if _, err := c.kill(comp); err != nil {
					return fail(err)
				}
			}
		}
		t0 := time.Now()
		if err := c.startProcess(comp); err != nil {
			return fail(err)
		}
		pid := c.statusOf(comp).PID
		if nowait {
			return ok(pid)
		}
		if err := c.waitReady(ctx, comp); err != nil {
			return map[string]any{"ok": false, "component": comp.name, "pid": pid, "error": err.Error(),
				"log_tail": logTail(comp.logPath, logTailLines)}
		}
		return ok(pid, "ready_ms", time.Since(t0).Milliseconds())
	}
	return fail(fmt.Errorf("unhandled request %q", verb))
}

// ctlMain is the client: it sends one request and prints the JSON answer. Exit status 0 when
// the answer says ok, 1 when it does not, 2 when the supervisor cannot be reached.
func ctlMain(args []string) int {
	socket := ""
	if len(args) >= 2 && args[0] == "--socket" {
		socket, args = args[1], args[2:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: ctl [--socket PATH] REQUEST...\n"+protocolHelp)
		return 2
	}
	if socket == "" {
		dir := os.Getenv("LOCKHEED_CONTROL_PLANE")
		if dir == "" {
			fmt.Fprintln(os.Stderr, "control-plane ctl: LOCKHEED_CONTROL_PLANE is not set (run inside scripts/control-plane -- ...)")
			return 2
		}
		socket = dir + "/control.sock"
	}
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "control-plane ctl: %v\n", err)
		return 2
	}
	defer conn.Close()
	// The longest request (start, wait) gives up after 120 s of readiness polling.
	_ = conn.SetDeadline(time.Now().Add(readyTimeout + 60*time.Second))
	if _, err := fmt.Fprintln(conn, strings.Join(args, " ")); err != nil {
		fmt.Fprintf(os.Stderr, "control-plane ctl: %v\n", err)
		return 2
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fmt.Fprintf(os.Stderr, "control-plane ctl: no answer: %v\n", err)
		return 2
	}
	fmt.Print(line)
	var resp struct {
		OK bool `json:"ok"`
	}
	if json.Unmarshal([]byte(line), &resp) != nil || !resp.OK {
		return 1
	}
	return 0
}
