// Command leaderelection is one replica of a controller that elects its leader with
// client-go's leader election (k8s.io/client-go/tools/leaderelection) on a Lease, as every Go
// controller does: a LeaseLock, ReleaseOnCancel, the three callbacks and, with -coordinated,
// coordinated leader election (the leader gives the Lease up when its preferredHolder names
// someone else). lockheed's interop tests run it beside this crate's LeaderElection on one
// Lease; it is also a way to try a cluster by hand (see the README's "Go peers by hand").
//
// It prints one JSON line per event on stdout: who, when (RFC 3339, nanoseconds, UTC), which
// Lease, what happened. SIGTERM or SIGINT stops it gracefully (the context is cancelled, the
// work stops, the Lease is released); SIGKILL is a crash.
//
// Events: "ready" (with the client-go version), "started_leading", "stopped_work" (the term's
// work is over: stamped before the release is written, so it comes before any successor's
// term), "new_leader", "releasing"/"released" (the release write and its outcome, with the
// error text when it failed, e.g. a 409 conflict), "stopped_leading", "stop_requested",
// "exit".
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// events writes the JSON lines, one at a time.
type events struct {
	mu    sync.Mutex
	who   string
	lease string
}

func (e *events) emit(event string, at time.Time, fields map[string]any) {
	line := map[string]any{
		"event": event,
		"who":   e.who,
		"lease": e.lease,
		"at":    at.UTC().Format(time.RFC3339Nano),
	}
	for k, v := range fields {
		line[k] = v
	}
	b, err := json.Marshal(line)
	if err != nil {
		panic(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// term tracks the current term's work, so that its end is reported once, at the earliest of
// the work's context ending and the release being written.
type term struct {
	mu      sync.Mutex
	leading bool
	ev      *events
}

func (t *term) start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.leading = true
	t.ev.emit("started_leading", time.Now(), nil)
}

func (t *term) stop(why string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.leading {
		return
	}
	t.leading = false
	t.ev.emit("stopped_work", now, map[string]any{"why": why})
}

// observed is client-go's LeaseLock, unchanged, with the release write reported: the term's
// work is declared over before the write that lets others in, and the write's outcome printed.
type observed struct {
	*resourcelock.LeaseLock
	term *term
	ev   *events
}

func (o *observed) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	if ler.HolderIdentity != "" {
		return o.LeaseLock.Update(ctx, ler)
	}
	o.term.stop("release")
	o.ev.emit("releasing", time.Now(), nil)
	err := o.LeaseLock.Update(ctx, ler)
	fields := map[string]any{"ok": err == nil}
	if err != nil {
		fields["error"] = err.Error()
	}
	o.ev.emit("released", time.Now(), fields)
	return err
}

func clientGoVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/client-go" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func main() {
	var (
		kubeconfig      = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default $KUBECONFIG)")
		namespace       = flag.String("namespace", "default", "namespace of the Lease")
		leaseName       = flag.String("lease", "", "name of the Lease (required)")
		identity        = flag.String("identity", "", "holder identity (required)")
		leaseDuration   = flag.Duration("lease-duration", 15*time.Second, "LeaseDuration")
		renewDeadline   = flag.Duration("renew-deadline", 10*time.Second, "RenewDeadline")
		retryPeriod     = flag.Duration("retry-period", 2*time.Second, "RetryPeriod")
		coordinated     = flag.Bool("coordinated", false, "coordinated leader election: give the Lease up when preferredHolder names someone else (and lead only a Lease that names this identity)")
		releaseOnCancel = flag.Bool("release-on-cancel", true, "ReleaseOnCancel: release the Lease on a graceful stop")
		once            = flag.Bool("once", false, "exit after the first term instead of campaigning again")
		verbosity       = flag.String("v", "0", "klog verbosity (logs go to stderr)")
	)
	flag.Parse()
	if *leaseName == "" || *identity == "" {
		fmt.Fprintln(os.Stderr, "leaderelection: -lease and -identity are required")
		os.Exit(2)
	}
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	_ = klogFlags.Set("v", *verbosity)

	ev := &events{who: *identity, lease: *namespace + "/" + *leaseName}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "leaderelection:", err)
		os.Exit(1)
	}
	client := kubernetes.NewForConfigOrDie(config)

	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-signals
		ev.emit("stop_requested", time.Now(), map[string]any{"signal": sig.String()})
		cancel()
	}()

	t := &term{ev: ev}
	lock := &observed{
		LeaseLock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: *leaseName, Namespace: *namespace},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: *identity},
		},
		term: t,
		ev:   ev,
	}
	ev.emit("ready", time.Now(), map[string]any{"client_go": clientGoVersion(), "coordinated": *coordinated})
	for ctx.Err() == nil {
		elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   *leaseDuration,
			RenewDeadline:   *renewDeadline,
			RetryPeriod:     *retryPeriod,
			ReleaseOnCancel: *releaseOnCancel,
			Coordinated:     *coordinated,
			Name:            *leaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(work context.Context) {
					t.start()
					<-work.Done()
					t.stop("context")
				},
				OnStoppedLeading: func() {
					ev.emit("stopped_leading", time.Now(), nil)
				},
				OnNewLeader: func(leader string) {
					ev.emit("new_leader", time.Now(), map[string]any{"leader": leader})
				},
			},
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "leaderelection:", err)
			os.Exit(1)
		}
		elector.Run(ctx)
		if *once {
			break
		}
	}
	ev.emit("exit", time.Now(), nil)
}
