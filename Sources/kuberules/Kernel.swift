import ArgumentParser
import Foundation
import KubeModel
import NftApply
import NftBackend
import NftModel
import Netlink

/// Opens the netlink kernel, or exits 3 with the reason.
func openNftKernel() throws -> NftNetlink {
    do {
        return try NftNetlink()
    } catch {
        warn("error: cannot open a netlink socket to nf_tables: \(error)")
        throw ExitCode(Exit.kernel)
    }
}

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

        Examples:
          kuberules diff --backend nftables --node-name node-a cluster/
        """)

    @OptionGroup var options: CompileOptions

    func run() throws {
        if options.backend == .ipvs { return try IpvsCommands.diff(options) }
        guard options.backend == .nftables else {
            warn("error: diff supports --backend nftables and ipvs in this build")
            throw ExitCode(Exit.badInput)
        }
        let desired = try Pipeline(options: options).nftables()
        let kernel = try openNftKernel()
        let applier = NftApplier(kernel: kernel)
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
        nftables: reads our tables (family ip and ip6, named by --table), diffs them against the
        compiled ruleset and sends the difference in ONE atomic netlink batch, retried when the
        ruleset changed concurrently. Other tables are never read or touched. Prints one summary
        line. Nothing reaches the kernel unless the whole input is valid. Exit 3 (naming the object)
        when the kernel refuses the batch; the ruleset is then exactly as before.

        ipvs: IPVS has no transactions. Order: ipsets (ipset restore), then new and changed
        virtual servers each followed by its real servers, the kube-ipvs0 addresses, then the
        iptables rules (iptables-restore --noflush), then removals (real servers, virtual servers,
        addresses). A removed TCP real server with connections is set to weight 0 and deleted by
        a later apply once idle. Exit 3 naming the object when the kernel refuses a request, or
        when the kernel has no IPVS. See docs/ipvs.md.

        Examples:
          kuberules apply --backend nftables --node-name node-a cluster/
          kuberules apply --dry-run --backend nftables --node-name node-a cluster/
          kuberules apply --backend ipvs --node-name node-a cluster/
        """)

    @Flag(name: .long, help: "Print the changes instead of making them.")
    var dryRun = false

    @OptionGroup var options: CompileOptions

    func run() throws {
        if options.backend == .ipvs { return try IpvsCommands.apply(options, dryRun: dryRun) }
        guard options.backend == .nftables else {
            warn("error: apply supports --backend nftables and ipvs in this build")
            throw ExitCode(Exit.badInput)
        }
        let desired = try Pipeline(options: options).nftables()
        let kernel = try openNftKernel()
        let applier = NftApplier(kernel: kernel)
        let report = try kernelOperation("applying") { try applier.apply(desired, dryRun: dryRun) }
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
        nftables: deletes the tables `ip TABLE` and `ip6 TABLE` (default kuberules). Other tables
        (kube-proxy's, Docker's, firewalld's) are not read or touched.

        ipvs: deletes the IPVS virtual servers whose address is on kube-ipvs0, the kube-ipvs0
        interface, IPVS mode's jumps and chains (iptables and ip6tables) and its ipsets. Virtual
        servers on other addresses are left alone.

        Examples:
          kuberules cleanup --backend nftables
          kuberules cleanup --backend ipvs
        """)

    @Option(name: .long, help: "Rules to remove: nftables or ipvs.")
    var backend: Backend = .nftables

    @Option(name: .long, help: ArgumentHelp("nftables: the name of our table in each family.", valueName: "name"))
    var table: String = "kuberules"

    func run() throws {
        if backend == .ipvs { return try IpvsCommands.cleanup() }
        guard backend == .nftables else {
            warn("error: cleanup supports --backend nftables and ipvs in this build")
            throw ExitCode(Exit.badInput)
        }
        let kernel = try openNftKernel()
        let applier = NftApplier(kernel: kernel)
        var removed = [String]()
        for family in [NftFamily.ip, .ip6] {
            if try kernelOperation("deleting table \(family.rawValue) \(table)", { try applier.cleanup(family: family, table: table) }) {
                removed.append("\(family.rawValue) \(table)")
            }
        }
        print(removed.isEmpty ? "nothing to remove" : "removed table " + removed.joined(separator: ", table "))
    }
}
