import ArgumentParser
import Foundation
import KubeModel
import NftApply
import NftBackend
import NftModel
import Netlink
import Parallel

/// Opens the netlink kernel, or exits 3 with the reason.
func openNftKernel() throws -> NftNetlink {
    do {
        return try NftNetlink()
    } catch {
        warn("error: cannot open a netlink socket to nf_tables: \(error)")
        throw ExitCode(Exit.kernel)
    }
}

/// An applier that keeps the digests of its commits in `stateDir` (none when empty), so the
/// next run reads back only what changed while nobody else touched nftables.
func nftApplier(_ kernel: NftNetlink, stateDir: String) -> NftApplier {
    let applier = NftApplier(kernel: kernel)
    if !stateDir.isEmpty { applier.stateStore = NftStateFile(directory: stateDir) }
    return applier
}

/// The compiled ruleset (bad input exits 2 before the kernel is opened) and its applier. Both
/// are kept until the process exits: freeing them at the end of a command is wasted work
/// (≈80 ms at 10,000 services, the applier's committed state and the desired ruleset).
func nftDesiredAndApplier(_ options: CompileOptions) throws -> (NftRuleset, NftApplier) {
    // Nothing is freed beside the applier's work, which is timed and latency-sensitive.
    Parallel.keepsReleasedValues = true
    let desired = try Pipeline(options: options).nftables(fingerprinted: true)
    let applier = nftApplier(try openNftKernel(), stateDir: options.stateDir)
    keepUntilExit(desired, applier)
    return (desired, applier)
}

/// Values never freed: the process is about to exit and the kernel reclaims the memory at once.
nonisolated(unsafe) private var keptUntilExit: [Any] = []

func keepUntilExit(_ values: Any...) { keptUntilExit.append(contentsOf: values) }

/// Runs a kernel operation; a kernel refusal exits 3 naming the object that failed.
func kernelOperation<T>(_ what: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        warn("error: \(what): \(error)")
        throw ExitCode(Exit.kernel)
    }
}

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what apply would change in the kernel of the current network namespace.",
        discussion: """
        Reads our tables from the kernel (nothing else), compares them with the compiled rules and
        prints one line per change. Exits 0 when the kernel already matches, 1 when it differs,
        2 on bad input, 3 when the kernel cannot be read.

        iptables: compares our chains (kube-proxy's KUBE-* chains in filter and nat) and the jumps
        into them. With the state the last apply recorded, a chain is unchanged when neither our
        rendering nor the kernel's copy changed since; without it, the rules are loaded into a
        scratch network namespace and compared with the kernel as iptables-save prints both.

        Examples:
          kuberules diff --backend nftables --node-name node-a cluster/
          kuberules diff --backend iptables --iptables legacy --node-name node-a cluster/
        """)

    @OptionGroup var options: CompileOptions

    func run() throws {
        if options.backend == .iptables { return try IptablesKernelCommands.diff(options) }
        if options.backend == .ipvs { return try IpvsCommands.diff(options) }
        guard options.backend == .nftables else {
            warn("error: diff supports --backend nftables, iptables and ipvs")
            throw ExitCode(Exit.badInput)
        }
        let (desired, applier) = try nftDesiredAndApplier(options)
        let plan = try kernelOperation("reading the kernel") { try applier.plan(desired) }
        if plan.isEmpty {
            print("no differences")
            return
        }
        for line in plan.listing { print(line) }
        throw ExitCode(Exit.differences)
    }
}

struct Apply: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the kernel's rules equal to the compiled ones, changing only what differs.",
        discussion: """
        nftables: reads our tables (family ip and ip6, named by --table, and with --nft-shards
        their shard tables TABLE-services-NN), diffs them against the compiled ruleset and sends
        the difference in ONE atomic netlink batch, retried when the ruleset changed concurrently;
        shard tables no longer used are deleted in the same batch. Other tables are never read
        or touched (only the list of table names is read, to find our stale shards). Prints one summary
        line. The digests of what was committed, and the elements of its sets, are kept in
        --state-dir with the ruleset generation it left: while that generation is unchanged (no
        nftables commit by anyone since), the next apply or diff reads back only the chains whose
        digests differ and diffs changed sets against their saved elements. KUBERULES_TIMING=1
        prints the time of each phase. Nothing reaches the kernel unless the whole input is valid. Exit 3 (naming the object)
        when the kernel refuses the batch; the ruleset is then exactly as before.

        iptables: one `iptables-restore --noflush` per run that rewrites only the chains that changed
        since the last apply (kube-proxy's partial sync; the state is kept in --state-dir), deletes
        stale chains of ours and inserts missing jumps from the built-in chains. Each table commits
        atomically. --iptables picks iptables-nft or iptables-legacy (default: the system's).

        ipvs: IPVS has no transactions. Order: ipsets (ipset restore), then new and changed
        virtual servers each followed by its real servers, the kube-ipvs0 addresses, then the
        iptables rules (iptables-restore --noflush), then removals (real servers, virtual servers,
        addresses). A removed TCP real server with connections is set to weight 0 and deleted by
        a later apply once idle. Exit 3 naming the object when the kernel refuses a request, or
        when the kernel has no IPVS. See docs/ipvs.md.

        Examples:
          kuberules apply --backend iptables --node-name node-a cluster/
          kuberules apply --backend nftables --node-name node-a cluster/
          kuberules apply --dry-run --backend nftables --node-name node-a cluster/
          kuberules apply --backend ipvs --node-name node-a cluster/
        """)

    @Flag(name: .long, help: "Print the changes instead of making them.")
    var dryRun = false

    @OptionGroup var options: CompileOptions

    func run() throws {
        if options.backend == .iptables { return try IptablesKernelCommands.apply(options, dryRun: dryRun) }
        if options.backend == .ipvs { return try IpvsCommands.apply(options, dryRun: dryRun) }
        guard options.backend == .nftables else {
            warn("error: apply supports --backend nftables, iptables and ipvs")
            throw ExitCode(Exit.badInput)
        }
        let (desired, applier) = try nftDesiredAndApplier(options)
        let report = try kernelOperation("applying") { try applier.apply(desired, dryRun: dryRun) }
        for p in report.phases { Timing.report("applier \(p.name)", seconds: p.seconds) }
        if dryRun {
            for line in report.listing { print(line) }
            print("dry run: " + report.summary)
        } else {
            print(report.summary)
        }
    }
}

struct Cleanup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove our rules from the kernel, and nothing else.",
        discussion: """
        nftables: deletes the tables `ip TABLE` and `ip6 TABLE` (default kuberules) and their
        shard tables `TABLE-services-NN` (--nft-shards). Other tables
        (kube-proxy's, Docker's, firewalld's) are not read or touched.

        iptables: removes the jumps into our chains from the built-in chains, then flushes and
        deletes our chains (kube-proxy's KUBE-* chains in filter and nat); other chains and rules
        stay. One family per run (--ip-family).

        ipvs: deletes the IPVS virtual servers whose address is on kube-ipvs0, the kube-ipvs0
        interface, IPVS mode's jumps and chains (iptables and ip6tables) and its ipsets. Virtual
        servers on other addresses are left alone.

        Examples:
          kuberules cleanup --backend nftables
          kuberules cleanup --backend iptables --iptables legacy --ip-family ipv6
          kuberules cleanup --backend ipvs
        """)

    @Option(name: .long, help: "Rules to remove: nftables, iptables or ipvs.")
    var backend: Backend = .nftables

    @Option(name: .long, help: "iptables: which iptables to run: system, nft or legacy.")
    var iptables: IptablesVariantOption = .system

    @Option(name: .long, help: "iptables: ipv4 or ipv6.")
    var ipFamily: FamilyOption = .ipv4

    @Option(name: .long, help: ArgumentHelp("iptables and nftables: where the apply state is kept (removed too).", valueName: "dir"))
    var stateDir: String = "/run/kuberules"

    @Option(name: .long, help: ArgumentHelp("nftables: the name of our table in each family.", valueName: "name"))
    var table: String = "kuberules"

    func run() throws {
        if backend == .iptables {
            return try IptablesKernelCommands.cleanup(variant: iptables, family: ipFamily.family, stateDir: stateDir)
        }
        if backend == .ipvs { return try IpvsCommands.cleanup(variant: iptables, stateDir: stateDir) }
        guard backend == .nftables else {
            warn("error: cleanup supports --backend nftables, iptables and ipvs")
            throw ExitCode(Exit.badInput)
        }
        let kernel = try openNftKernel()
        let applier = nftApplier(kernel, stateDir: stateDir)
        // The shards first: without the main table they would still translate, unmasqueraded.
        let shards = try kernelOperation("deleting the shard tables of \(table)") {
            try applier.cleanupShards(table: table, prefix: NftBackend.shardPrefix(table))
        }
        var removed = [String]()
        for family in [NftFamily.ip, .ip6] {
            if try kernelOperation("deleting table \(family.rawValue) \(table)", { try applier.cleanup(family: family, table: table) }) {
                removed.append("\(family.rawValue) \(table)")
            }
        }
        removed += shards.map { "\($0.family.rawValue) \($0.name)" }
        (applier.stateStore as? NftStateFile)?.removeAll()
        print(removed.isEmpty ? "nothing to remove" : "removed table " + removed.joined(separator: ", table "))
    }
}
