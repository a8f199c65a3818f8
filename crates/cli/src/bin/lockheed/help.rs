//! The manual's longer sections, shown after the options by `--help`: examples, exit codes,
//! the command's environment and the RBAC rules. (Shared sections are macros, because
//! `concat!` only takes literals.)

/// The exit codes of `lockheed run`.
macro_rules! run_exit_codes {
    () => {
        concat!(
            "  N      the command's own exit code\n",
            "  128+N  the command died of signal N (or lockheed was interrupted by signal N\n",
            "         while waiting for the lock)\n",
            "  125    lockheed failed: bad arguments, a cluster error, --timeout ran out, or\n",
            "         the lock was lost while the command ran (the command was stopped)\n",
            "  126    the command was found but cannot be run\n",
            "  127    the command was not found\n",
        )
    };
}

/// After `lockheed --help`.
pub(crate) const MAIN: &str = concat!(
    "Examples:\n",
    "  # Run the nightly report on one machine at a time, giving up after 10 minutes\n",
    "  lockheed run nightly-report --timeout 10m -- ./report.sh --full\n",
    "\n",
    "  # What is held, by whom, until when\n",
    "  lockheed list --held\n",
    "\n",
    "  # Remove the lease of a holder whose machine died\n",
    "  lockheed release nightly-report --holder worker-7-4242\n",
    "\n",
    "  # Hold the Lease a Go controller elects its leader on while a command runs\n",
    "  lockheed run --lease my-controller -- ./maintenance.sh\n",
    "  lockheed list --lease                      # every Lease of the namespace\n",
    "\n",
    "Exit codes of `lockheed run`:\n",
    run_exit_codes!(),
    "The other commands exit with 0 on success and 125 on failure.\n",
    "\n",
    "Permissions (RBAC, in the locks' namespace): get, create, update, list and watch on\n",
    "configmaps (with --lease: on leases of group coordination.k8s.io). Without list and\n",
    "watch, waiters poll instead of being woken; `lockheed list` needs list.",
);

/// After `lockheed run --help`.
pub(crate) const RUN: &str = concat!(
    "Examples:\n",
    "  # One database migration at a time, across every pod of the deployment\n",
    "  lockheed run migrations -- ./migrate up\n",
    "\n",
    "  # Give up if the lock is not free within 5 minutes; say why it is taken\n",
    "  lockheed run deploy --timeout 5m --reason \"release 1.4\" -- make deploy\n",
    "\n",
    "  # At most 3 GPU jobs at once (a semaphore)\n",
    "  lockheed run gpu --max-holders 3 -- python train.py\n",
    "\n",
    "  # Readers share the catalog; a writer has it alone\n",
    "  lockheed run catalog --shared -- ./read-catalog\n",
    "  lockheed run catalog --exclusive -- ./rebuild-catalog\n",
    "\n",
    "  # Stand in for the leader of a Go controller (client-go leader election on the\n",
    "  # Lease my-controller): wait for the Lease, hold it while the command runs\n",
    "  lockheed run --lease my-controller --duration 15s -- ./drain-queue\n",
    "\n",
    "  # Pass the fencing token on to what the lock protects\n",
    "  lockheed run ledger -- sh -c 'ledger-writer --fencing-token \"$LOCKHEED_TOKEN\"'\n",
    "\n",
    "Environment given to the command (besides lockheed's own):\n",
    "  LOCKHEED_LOCK       the lock's name\n",
    "  LOCKHEED_NAMESPACE  the namespace of the lock's ConfigMap (or Lease)\n",
    "  LOCKHEED_HOLDER     the holder identity (see --holder)\n",
    "  LOCKHEED_TOKEN      the fencing token of this acquisition: it increases with every\n",
    "                      acquisition of the lock, so what the lock protects can refuse a\n",
    "                      writer whose token is lower than the highest it has seen\n",
    "\n",
    "Exit codes:\n",
    run_exit_codes!(),
);

/// After `lockheed list --help`.
pub(crate) const LIST: &str = concat!(
    "Examples:\n",
    "  lockheed list                     # every lock\n",
    "  lockheed list --held --tag db     # held locks tagged db\n",
    "  lockheed list --condition '{\"or\": [{\"tagsContain\": \"db\"}, {\"tagsContain\": \"cache\"}]}'\n",
    "  lockheed list -o json | jq -r '.locks[] | select(.holders == []) | .name'\n",
    "\n",
    "Conditions (--condition) are JSON, one key per node:\n",
    "  {\"tagsContain\": \"TAG\"}  {\"acquired\": true}  {\"acquired\": false}\n",
    "  {\"and\": [COND, ..]}  {\"or\": [COND, ..]}  {\"not\": COND}\n",
    "\n",
    "JSON output:\n",
    "  {\"namespace\": \"default\",\n",
    "   \"locks\": [{\"name\", \"kind\", \"maxHolders\", \"tags\", \"fencingToken\",\n",
    "              \"holders\": [{\"id\", \"since\", \"expires\", \"reason\", \"token\", \"shared\", \"waiting\"}],\n",
    "              \"waiters\": [..]}],\n",
    "   \"unreadable\": [{\"error\": \"..\"}]}\n",
    "Times are RFC 3339; \"expires\" is null for a lease without expiry.",
);

/// After `lockheed show --help`.
pub(crate) const SHOW: &str = concat!(
    "Examples:\n",
    "  lockheed show nightly-report\n",
    "  lockheed show nightly-report -o json | jq -r '.holders[].id'\n",
    "\n",
    "The JSON is one lock as `lockheed list -o json` prints it.",
);

/// After `lockheed release --help`.
pub(crate) const RELEASE: &str = concat!(
    "Examples:\n",
    "  lockheed show nightly-report                            # who holds it\n",
    "  lockheed release nightly-report --holder worker-7-4242  # remove that holder\n",
    "  lockheed release gpu --all                              # remove every holder",
);
