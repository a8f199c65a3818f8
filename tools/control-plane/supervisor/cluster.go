package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	readyTimeout = 120 * time.Second       // a loaded 2-core machine can be slow
	pollInterval = 100 * time.Millisecond  // as envtest polls
	probeTimeout = 2 * time.Second         // one health request; a SIGSTOPped process never answers
	killWait     = 15 * time.Second        // for a SIGKILLed process to be reaped
	termWait     = 30 * time.Second        // for a SIGTERMed process to exit before SIGKILL
	logTailLines = 40                      // printed when a component fails to start
	stateRunning = "running"               // process alive and not stopped
	stateStopped = "stopped"               // SIGSTOPped by a "stop" request
	stateExited  = "exited"                // process gone (killed, crashed or never restarted)
	stateNew     = "not-started"           // never started yet
	apiserverKey = "apiserver"             // the component name of kube-apiserver
	etcdPrefix   = "etcd-"                 // etcd members are etcd-0, etcd-1, ...
	tokenPrefix  = "lockheed-test-cluster" // --initial-cluster-token prefix
)

// component is one supervised process: an etcd member or kube-apiserver.
type component struct {
	name    string
	kind    string // "etcd" or "apiserver"
	bin     string
	args    []string
	logPath string
	ports   map[string]int

	opMu sync.Mutex // serialises control operations on this component

	// Guarded by cluster.mu.
	pid        int
	state      string
	exitStatus string
	starts     int
	startedAt  time.Time
	done       chan struct{} // closed when the current process has been reaped
	expected   bool          // the current process is being ended on purpose
}

// cluster is the whole control plane: etcd members and one kube-apiserver.
type cluster struct {
	stateDir  string
	binDir    string
	etcd      []*component
	apiserver *component
	pki       *pki
	apiURL    string
	token     string
	admin     *http.Client // authenticated as admin (system:masters), trusts the server CA
	plain     *http.Client // plain HTTP to etcd
	spawn     chan spawnRequest
	stderr    io.Writer

	mu           sync.Mutex
	shuttingDown bool
}

type spawnRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

// spawner starts every child process from one OS thread that lives as long as the
// supervisor: Pdeathsig fires when the thread that forked the child exits, not the process,
// so the forking thread must never go away before the supervisor does.
func spawner(reqs chan spawnRequest) {
	runtime.LockOSThread() // never unlocked: this thread stays until the process exits
	for r := range reqs {
		r.errc <- r.cmd.Start()
	}
}

func newCluster(stateDir, binDir string, members int, stderr io.Writer) (*cluster, error) {
	c := &cluster{
		stateDir: stateDir,
		binDir:   binDir,
		spawn:    make(chan spawnRequest),
		stderr:   stderr,
		plain:    &http.Client{Timeout: probeTimeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}},
	}
	go spawner(c.spawn)
	p, err := makePKI(stateDir)
	if err != nil {
		return nil, fmt.Errorf("generating certificates: %w", err)
	}
	c.pki = p
	pool := x509.NewCertPool()
	pool.AddCert(p.serverCA.cert)
	adminCert := p.userCerts["admin"]
	c.admin = &http.Client{
		Timeout: probeTimeout,
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{
				RootCAs:      pool,
				Certificates: []tls.Certificate{{Certificate: [][]byte{adminCert.cert.Raw}, PrivateKey: adminCert.key}},
				MinVersion:   tls.VersionTLS12,
			},
		},
	}
	for i := 0; i < members; i++ {
		c.etcd = append(c.etcd, &component{
			name:    fmt.Sprintf("%s%d", etcdPrefix, i),
			kind:    "etcd",
			bin:     filepath.Join(binDir, "etcd"),
			logPath: filepath.Join(stateDir, fmt.Sprintf("%s%d.log", etcdPrefix, i)),
			state:   stateNew,
		})
	}
	c.apiserver = &component{
		name:    apiserverKey,
		kind:    "apiserver",
		bin:     filepath.Join(binDir, "kube-apiserver"),
		logPath: filepath.Join(stateDir, "apiserver.log"),
		state:   stateNew,
	}
	return c, nil
}

// freePorts reserves n distinct free loopback ports (all held open until every one is chosen).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// configure assigns fresh ports and builds every component's command line.
func (c *cluster) configure() error {
	ports, err := freePorts(2*len(c.etcd) + 1)
	if err != nil {
		return fmt.Errorf("choosing free ports: %w", err)
	}
	var initial, servers []string
	for i, m := range c.etcd {
		m.ports = map[string]int{"client": ports[2*i], "peer": ports[2*i+1]}
		initial = append(initial, fmt.Sprintf("%s=http://127.0.0.1:%d", m.name, m.ports["peer"]))
		servers = append(servers, fmt.Sprintf("http://127.0.0.1:%d", m.ports["client"]))
	}
	c.token = fmt.Sprintf("%s-%d-%d", tokenPrefix, os.Getpid(), time.Now().UnixNano())
	for _, m := range c.etcd {
		client := fmt.Sprintf("http://127.0.0.1:%d", m.ports["client"])
		peer := fmt.Sprintf("http://127.0.0.1:%d", m.ports["peer"])
		m.args = []string{
			"--name=" + m.name,
			"--data-dir=" + filepath.Join(c.stateDir, m.name),
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-state=new",
			"--initial-cluster-token=" + c.token,
			"--unsafe-no-fsync",
		}
	}
	port := ports[len(ports)-1]
	c.apiserver.ports = map[string]int{"secure": port}
	c.apiURL = fmt.Sprintf("https://127.0.0.1:%d", port)
	c.apiserver.args = []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.stateDir, "apiserver-certs"),
		"--tls-cert-file=" + c.pki.servingCert,
		"--tls-private-key-file=" + c.pki.servingKey,
		"--client-ca-file=" + c.pki.clientCAFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://127.0.0.1",
		"--service-account-key-file=" + c.pki.saPublicKey,
		"--service-account-signing-key-file=" + c.pki.saSigningKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		"--disable-admission-plugins=ServiceAccount",
		"--etcd-servers=" + strings.Join(servers, ","),
		// The lease and master-count reconcilers refuse a loopback advertise address (an
		// EndpointSlice may not hold one) since Kubernetes 1.37; nothing here needs the
		// endpoints of the "kubernetes" service.
		"--endpoint-reconciler-type=none",
		// Coordinated leader election (beta, off by default through 1.37): without it the
		// server drops a Lease's spec.strategy and spec.preferredHolder on write, and the
		// tests of lockheed's preferred-holder handover (and client-go's) have nothing to read.
		"--feature-gates=CoordinatedLeaderElection=true",
		"--runtime-config=coordination.k8s.io/v1beta1=true",
	}
	return nil
}

// childEnv is the supervisor's environment without what could change how a component
// behaves: etcd reads ETCD_* variables as flags.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startProcess starts comp's process (which must not be running) in its own process group,
// with SIGKILL as its parent-death signal, logging to its log file.
func (c *cluster) startProcess(comp *component) error {
	c.mu.Lock()
	if c.shuttingDown {
		c.mu.Unlock()
		return errors.New("the control plane is shutting down")
	}
	if comp.state == stateRunning {
		c.mu.Unlock()
		return fmt.Errorf("%s is already running (pid %d)", comp.name, comp.pid)
	}
	if comp.state == stateStopped {
		c.mu.Unlock()
		return fmt.Errorf("%s is stopped (pid %d): send cont, or kill it first", comp.name, comp.pid)
	}
	c.mu.Unlock()

	logf, err := os.OpenFile(comp.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), comp.bin, strings.Join(comp.args, " "))
	cmd := exec.Command(comp.bin, comp.args...)
	cmd.Dir = c.stateDir
	cmd.Env = childEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	errc := make(chan error, 1)
	c.spawn <- spawnRequest{cmd: cmd, errc: errc}
	if err := <-errc; err != nil {
		_ = logf.Close()
		return fmt.Errorf("starting %s: %w", comp.name, err)
	}
	done := make(chan struct{})
	c.mu.Lock()
	if c.shuttingDown {
		// The shutdown began while this process was being started: it must not outlive it.
		comp.expected = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	comp.pid = cmd.Process.Pid
	comp.state = stateRunning
	comp.exitStatus = ""
	comp.starts++
	comp.startedAt = time.Now()
	comp.done = done
	comp.expected = c.shuttingDown
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		status := "exit status 0"
		if err != nil {
			status = err.Error()
		}
		c.mu.Lock()
		comp.state = stateExited
		comp.exitStatus = status
		unexpected := !comp.expected && !c.shuttingDown
		pid := comp.pid
		c.mu.Unlock()
		close(done)
		if unexpected {
			fmt.Fprintf(c.stderr, "control-plane: warning: %s (pid %d) exited by itself: %s (log: %s)\n", comp.name, pid, status, comp.logPath)
		}
	}()
	return nil
}

// signalGroup sends sig to comp's whole process group.
func (c *cluster) signalGroup(comp *component, sig syscall.Signal) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if comp.state != stateRunning && comp.state != stateStopped {
		return 0, fmt.Errorf("%s is not running (%s)", comp.name, describeState(comp))
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		comp.expected = true
	}
	if err := syscall.Kill(-comp.pid, sig); err != nil {
		return comp.pid, fmt.Errorf("signalling %s (pid %d): %w", comp.name, comp.pid, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		comp.state = stateStopped
	case syscall.SIGCONT:
		comp.state = stateRunning
	}
	return comp.pid, nil
}

func describeState(comp *component) string {
	if comp.state == stateExited && comp.exitStatus != "" {
		return stateExited + ": " + comp.exitStatus
	}
	return comp.state
}

// waitExit waits for comp's current process to be reaped.
func (c *cluster) waitExit(comp *component, timeout time.Duration) error {
	c.mu.Lock()
	done := comp.done
	c.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %s", comp.name, timeout)
	}
}

// kill SIGKILLs comp and waits until it is gone.
func (c *cluster) kill(comp *component) (int, error) {
	pid, err := c.signalGroup(comp, syscall.SIGKILL)
	if err != nil {
		return pid, err
	}
	return pid, c.waitExit(comp, killWait)
}

// term SIGTERMs comp (continuing it if stopped) and waits, then SIGKILLs it if needed.
func (c *cluster) term(comp *component) (int, error) {
	pid, err := c.signalGroup(comp, syscall.SIGTERM)
	if err != nil {
		return pid, err
	}
	_, _ = c.signalGroup(comp, syscall.SIGCONT)
	if c.waitExit(comp, termWait) == nil {
		return pid, nil
	}
	return c.kill(comp)
}

// ready reports whether comp answers its health check: etcd's /health says true (the member
// has a leader), kube-apiserver's /readyz says ok.
func (c *cluster) ready(ctx context.Context, comp *component) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var url string
	client := c.plain
	if comp.kind == "etcd" {
		url = fmt.Sprintf("http://127.0.0.1:%d/health", comp.ports["client"])
	} else {
		url = c.apiURL + "/readyz"
		client = c.admin
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return false
	}
	if comp.kind == "etcd" {
		var h struct {
			Health string `json:"health"`
		}
		return json.Unmarshal(body, &h) == nil && h.Health == "true"
	}
	return strings.TrimSpace(string(body)) == "ok"
}

// errExited is returned by waitReady when the process ends before becoming ready.
var errExited = errors.New("exited before becoming ready")

// waitReady polls comp's health every 100 ms until it is ready, its process exits, ctx ends
// or readyTimeout passes.
func (c *cluster) waitReady(ctx context.Context, comp *component) error {
	deadline := time.Now().Add(readyTimeout)
	c.mu.Lock()
	done := comp.done
	c.mu.Unlock()
	for {
		if c.ready(ctx, comp) {
			return nil
		}
		if done != nil {
			select {
			case <-done:
				c.mu.Lock()
				status := comp.exitStatus
				c.mu.Unlock()
				return fmt.Errorf("%s %w (%s)", comp.name, errExited, status)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not ready within %s", comp.name, readyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// waitDefaultNamespace waits until the "default" namespace exists.
func (c *cluster) waitDefaultNamespace(ctx context.Context) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, probeTimeout)
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.apiURL+"/api/v1/namespaces/default", nil)
		if err == nil {
			if resp, err := c.admin.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					cancel()
					return nil
				}
			}
		}
		cancel()
		if time.Now().After(deadline) {
			return fmt.Errorf("the default namespace did not appear within %s", readyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// logTail returns the last n lines of a log file.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)\n", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

func (c *cluster) printLogTail(comp *component) {
	fmt.Fprintf(c.stderr, "control-plane: last %d lines of %s:\n%s", logTailLines, comp.logPath, logTail(comp.logPath, logTailLines))
}

func addrInUse(comp *component) bool {
	data, err := os.ReadFile(comp.logPath)
	return err == nil && bytes.Contains(data, []byte("address already in use"))
}

// errPortTaken means a chosen port was taken before a component could bind it: retry.
var errPortTaken = errors.New("a chosen port was taken by another process")

// startAll starts every etcd member (together, as a cluster needs a quorum), waits until
// each is healthy, then starts kube-apiserver and waits for /readyz and the default namespace.
func (c *cluster) startAll(ctx context.Context) (etcdTime, apiTime time.Duration, err error) {
	t0 := time.Now()
	for _, m := range c.etcd {
		if err := c.startProcess(m); err != nil {
			return 0, 0, err
		}
	}
	errs := make(chan error, len(c.etcd))
	for _, m := range c.etcd {
		go func(m *component) { errs <- c.waitReady(ctx, m) }(m)
	}
	var firstErr error
	for range c.etcd {
		if err := <-errs; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		for _, m := range c.etcd {
			if addrInUse(m) {
				return 0, 0, errPortTaken
			}
		}
		if ctx.Err() == nil {
			for _, m := range c.etcd {
				c.printLogTail(m)
			}
		}
		return 0, 0, firstErr
	}
	etcdTime = time.Since(t0)
	t1 := time.Now()
	if err := c.startProcess(c.apiserver); err != nil {
		return etcdTime, 0, err
	}
	if err := c.waitReady(ctx, c.apiserver); err != nil {
		if addrInUse(c.apiserver) {
			return etcdTime, 0, errPortTaken
		}
		if ctx.Err() == nil {
			c.printLogTail(c.apiserver)
		}
		return etcdTime, 0, err
	}
	if err := c.waitDefaultNamespace(ctx); err != nil {
		if ctx.Err() == nil {
			c.printLogTail(c.apiserver)
		}
		return etcdTime, 0, err
	}
	return etcdTime, time.Since(t1), nil
}

// killAll SIGKILLs every component's process group and waits for them to be reaped. It is
// used at the end: the state is thrown away, so nothing needs a graceful stop.
func (c *cluster) killAll() {
	c.mu.Lock()
	c.shuttingDown = true
	all := append([]*component{c.apiserver}, c.etcd...)
	var waits []chan struct{}
	for _, comp := range all {
		if comp.pid > 0 {
			// Even an exited leader's group is signalled, in case anything else is left in it.
			_ = syscall.Kill(-comp.pid, syscall.SIGKILL)
		}
		if comp.done != nil {
			waits = append(waits, comp.done)
		}
	}
	c.mu.Unlock()
	deadline := time.After(killWait)
	for _, d := range waits {
		select {
		case <-d:
		case <-deadline:
			return
		}
	}
}

// resetForRetry forgets the components' processes after a failed start attempt.
func (c *cluster) resetForRetry() error {
	c.killAll()
	c.mu.Lock()
	c.shuttingDown = false
	for _, comp := range append([]*component{c.apiserver}, c.etcd...) {
		comp.pid, comp.state, comp.exitStatus, comp.starts, comp.done = 0, stateNew, "", 0, nil
	}
	c.mu.Unlock()
	for _, m := range c.etcd {
		if err := os.RemoveAll(filepath.Join(c.stateDir, m.name)); err != nil {
			return err
		}
	}
	// The logs are started afresh, so that a new attempt is judged on its own output.
	for _, comp := range append([]*component{c.apiserver}, c.etcd...) {
		_ = os.Remove(comp.logPath)
	}
	return nil
}

// component finds a component by name ("apiserver", "kube-apiserver", "etcd-N", and "etcd"
// when there is a single member).
func (c *cluster) component(name string) (*component, error) {
	switch {
	case name == apiserverKey || name == "kube-apiserver":
		return c.apiserver, nil
	case name == "etcd" && len(c.etcd) == 1:
		return c.etcd[0], nil
	}
	for _, m := range c.etcd {
		if m.name == name {
			return m, nil
		}
	}
	names := []string{apiserverKey}
	for _, m := range c.etcd {
		names = append(names, m.name)
	}
	return nil, fmt.Errorf("unknown component %q (known: %s)", name, strings.Join(names, ", "))
}

// etcdLeader asks each running member's /metrics whether it leads.
func (c *cluster) etcdLeader(ctx context.Context) (*component, error) {
	var asked, skipped []string
	for _, m := range c.etcd {
		c.mu.Lock()
		st := m.state
		c.mu.Unlock()
		if st != stateRunning {
			skipped = append(skipped, m.name+" "+st)
			continue
		}
		asked = append(asked, m.name)
		if leader, err := c.isLeader(ctx, m); err == nil && leader {
			return m, nil
		}
	}
	if len(asked) == 0 {
		return nil, fmt.Errorf("no etcd member is running (%s)", strings.Join(skipped, ", "))
	}
	msg := fmt.Sprintf("no running member reports itself leader (asked %s", strings.Join(asked, ", "))
	if len(skipped) > 0 {
		msg += "; not asked: " + strings.Join(skipped, ", ")
	}
	return nil, errors.New(msg + ")")
}

func (c *cluster) isLeader(ctx context.Context, m *component) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", m.ports["client"]), nil)
	if err != nil {
		return false, err
	}
	resp, err := c.plain.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "etcd_server_is_leader ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "etcd_server_is_leader ")) == "1", nil
		}
	}
	return false, sc.Err()
}
