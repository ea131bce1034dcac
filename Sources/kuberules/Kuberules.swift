import ArgumentParser
import Foundation
import KubeModel
import KubePlan
import NftBackend
import IpvsBackend

/// Exit codes: 0 ok, 1 differences found, 2 bad input or usage, 3 kernel failure.
enum Exit {
    static let ok: Int32 = 0
    static let differences: Int32 = 1
    static let badInput: Int32 = 2
    static let kernel: Int32 = 3
}

@main
struct Kuberules: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kuberules",
        abstract: "Compile Kubernetes Services into iptables, nftables or IPVS rules, check them, apply them.",
        discussion: """
        kuberules reads Services, EndpointSlices (or v1 Endpoints) and Nodes as `kubectl get -o yaml|json`
        prints them, plus an optional KubeProxyConfiguration, and produces the rules kube-proxy would
        program on one node.

        Exit codes: 0 ok, 1 differences found, 2 bad input or usage, 3 kernel failure.

        Examples:
          kubectl get svc,endpointslices,nodes -A -o yaml | kuberules render --node-name worker-1 -
          kuberules render --backend iptables --config proxy.yaml --node-name n1 cluster/
          kuberules check --golden expected.iptables --node-name n1 cluster.yaml
          kuberules render --backend nftables --node-name n1 cluster.yaml | unshare -n nft -f -
          kuberules render --backend ipvs --section ipvsadm --node-name n1 cluster.yaml | ipvsadm -R
          kuberules diff --backend nftables --node-name n1 cluster.yaml
          kuberules apply --backend nftables --node-name n1 cluster.yaml
          kuberules cleanup --backend nftables
        """,
        subcommands: [Render.self, Check.self, Diff.self, Apply.self, Cleanup.self]
    )

    /// ArgumentParser exits 64 on usage errors; kuberules promises 2.
    static func main() {
        tuneMalloc()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let exitCode = Self.exitCode(for: error)
            if exitCode == .success {
                Self.exit(withError: error)  // --help, --version
            }
            let message = Self.fullMessage(for: error)
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            Foundation.exit(error is ExitCode ? exitCode.rawValue : Exit.badInput)
        }
    }
}

enum Backend: String, ExpressibleByArgument, CaseIterable {
    case iptables, nftables, ipvs
}

enum SectionOption: String, ExpressibleByArgument, CaseIterable {
    case ipvsadm, ipset, iptables
    var section: IpvsConfig.Section { IpvsConfig.Section(rawValue: rawValue)! }
}

enum FamilyOption: String, ExpressibleByArgument, CaseIterable {
    case ipv4, ipv6
    var family: IPFamily { self == .ipv4 ? .ipv4 : .ipv6 }
}

/// Options shared by every command that compiles a cluster.
struct CompileOptions: ParsableArguments {
    @Option(name: .long, help: "Rules to produce: iptables, nftables or ipvs.")
    var backend: Backend = .iptables

    @Option(name: .long, help: ArgumentHelp("A KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1).", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("This node's name (overrides hostnameOverride; decides which endpoints are local).", valueName: "name"))
    var nodeName: String?

    @Option(name: .customLong("node-ip"), help: ArgumentHelp("A node address (repeatable; overrides the Node object's addresses).", valueName: "ip"))
    var nodeIPs: [String] = []

    @Option(name: .long, help: "IP family: ipv4 or ipv6. Default: ipv4 for iptables (ip6tables with ipv6), both for nftables.")
    var ipFamily: FamilyOption?

    @Option(name: .long, help: ArgumentHelp("nftables: the name of our table in each family.", valueName: "name"))
    var table: String = "kuberules"

    @Option(name: .long, help: ArgumentHelp("nftables: split service dispatch over this many extra tables per family (TABLE-services-NN, 1 to \(NftBackend.maxShards); 1: none). A change then makes the kernel re-validate one shard instead of every service: use 16 at 10,000 services.", valueName: "n"))
    var nftShards: Int = 1

    @Flag(name: .long, help: "Leave invalid objects out with a warning instead of failing (as kube-proxy does).")
    var skipInvalid = false

    @Flag(name: .long, help: "iptables: also insert the jumps from the built-in chains (INPUT, FORWARD, OUTPUT, PREROUTING, POSTROUTING).")
    var withJumps = false

    @Flag(name: .long, help: "iptables: write `MASQUERADE --random-fully`, as kube-proxy does on hosts whose iptables supports it.")
    var masqueradeRandomFully = false

    @Flag(name: .long, help: "iptables: add kube-proxy's nfacct counters (INVALID drops, localhost NodePorts), as on hosts with nfacct.")
    var nfacct = false

    @Option(name: .long, help: "iptables apply/diff: which iptables to run: system (the iptables-restore alternative), nft or legacy.")
    var iptables: IptablesVariantOption = .system

    @Option(name: .long, help: ArgumentHelp("apply/diff: where the state of the last apply is kept (iptables: partial syncs; nftables: digests of what was committed); empty: none.", valueName: "dir"))
    var stateDir: String = "/run/kuberules"

    @Option(name: .long, help: "ipvs: print only one section (ipvsadm, ipset or iptables), without its separator line.")
    var section: SectionOption?

    @Argument(help: ArgumentHelp("Manifest files or directories (*.yaml, *.yml, *.json, recursively); - for stdin.", valueName: "input"))
    var inputs: [String] = []

    /// The families to compile.
    var families: [IPFamily] {
        if let f = ipFamily { return [f.family] }
        return backend == .nftables ? [.ipv4, .ipv6] : [.ipv4]
    }

    func validate() throws {
        if table.isEmpty || table.utf8.count > 255 { throw ValidationError("--table: a table name is 1 to 255 characters") }
        if nftShards < 1 || nftShards > NftBackend.maxShards { throw ValidationError("--nft-shards: 1 to \(NftBackend.maxShards)") }
        if nftShards > 1 && NftBackend.shardName(table, 0).utf8.count > 255 {
            throw ValidationError("--table: with --nft-shards, a table name is 1 to \(255 - (NftBackend.shardName("", 0).utf8.count)) characters")
        }
        if section != nil && backend != .ipvs { throw ValidationError("--section: only with --backend ipvs") }
        if inputs.isEmpty { throw ValidationError("at least one input (a file, a directory or - for stdin) is required") }
        for ip in nodeIPs where IPAddress(ip) == nil {
            throw ValidationError("--node-ip: \"\(ip)\" is not a valid IP address")
        }
    }
}

func warn(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Tunes glibc's malloc (through `mallopt`, which Swift's Glibc module does not export; does
/// nothing where there is none):
/// - no fastbins (`M_MXFAST` 0): a large ruleset is millions of small allocations, and
///   consolidating the fastbins when they are freed cost ≈10 % of a 10,000-service render
///   (measured with GLIBC_TUNABLES=glibc.malloc.mxfast=0 first);
/// - blocks up to 32 MiB come from the heap, which keeps up to 64 MiB of freed memory
///   (`M_MMAP_THRESHOLD`, `M_TRIM_THRESHOLD`): growing buffers of megabytes (the saved
///   state, element encodings) then reuse pages already touched instead of mapping and
///   zeroing fresh ones each time (the saved state's load went from 15-20 to 7-8 ms).
func tuneMalloc() {
    #if os(Linux) && canImport(Glibc)
    // RTLD_DEFAULT is a null handle on glibc; the M_* values are glibc's malloc.h.
    guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    let mallopt = unsafeBitCast(sym, to: Mallopt.self)
    let mMXFAST: Int32 = 1, mTRIMTHRESHOLD: Int32 = -1, mMMAPTHRESHOLD: Int32 = -3
    _ = mallopt(mMXFAST, 0)
    _ = mallopt(mMMAPTHRESHOLD, 32 << 20)
    _ = mallopt(mTRIMTHRESHOLD, 64 << 20)
    #endif
}
