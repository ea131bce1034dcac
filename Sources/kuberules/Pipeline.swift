import ArgumentParser
import Foundation
import IptablesBackend
import IpvsBackend
import KubeModel
import KubePlan
import NftBackend
import NftModel
import Parallel

/// Load → validate → plan → backend → text, shared by render and check.
struct Pipeline {
    let options: CompileOptions

    /// Loads and plans every requested family; prints warnings; on invalid input prints every error and exits 2.
    func plans() throws -> [Plan] {
        do {
            var proxy = ProxyConfiguration()
            if let path = options.config { proxy = try ManifestLoader.loadProxyConfiguration(path: path) }
            var loader = ManifestLoader(skipInvalid: options.skipInvalid)
            let cluster = try Timing.measure("load") { try loader.load(paths: options.inputs) }
            for w in loader.warnings { warn(label(w) + w.description) }
            if cluster.services.isEmpty { warn("warning: no Service objects in the input") }
            let (node, notes) = NodeConfig.resolve(proxy: proxy, nodeName: options.nodeName,
                                                   nodeIPs: options.nodeIPs.compactMap { IPAddress($0) }, cluster: cluster)
            for n in notes { warn(label(n) + n.description) }
            // The families side by side: each has serial parts the other can fill.
            let families = options.families
            return Timing.measure("plan") { Parallel.map(count: families.count) { Planner.plan(cluster: cluster, node: node, family: families[$0]) } }
        } catch let e as InputError {
            for d in e.diagnostics { warn("error: " + d.description) }
            throw ExitCode(Exit.badInput)
        }
    }

    func label(_ d: Diagnostic) -> String {
        switch d.severity { case .error: "error: "; case .warning: "warning: "; case .note: "note: " }
    }

    func iptables() throws -> IptablesRuleset {
        let plans = try Timing.measure("load+plan") { try self.plans() }
        let opts = IptablesOptions(masqueradeRandomFully: options.masqueradeRandomFully, nfacct: options.nfacct)
        defer { Parallel.releaseInBackground(plans) }
        return Timing.measure("iptables backend") { IptablesBackend.build(plans[0], options: opts) }
    }

    /// `fingerprinted`: with table fingerprints (apply and diff use them; render does not).
    func nftables(fingerprinted: Bool = false) throws -> NftRuleset {
        let plans = try Timing.measure("load+plan") { try self.plans() }
        defer { Parallel.releaseInBackground(plans) }
        return Timing.measure("nftables backend") { NftBackend.build(plans, table: options.table, shards: options.nftShards, fingerprintSalt: fingerprinted ? buildIdentity() : nil) }
    }

    /// Identifies this kuberules executable (size, modification time, inode): table
    /// fingerprints made by another build are never trusted.
    func buildIdentity() -> UInt64 {
        var st = stat()
        guard stat("/proc/self/exe", &st) == 0 else { return UInt64.random(in: 0...UInt64.max) }
        var h = PlanHasher()
        h.u64(UInt64(st.st_size)); h.u64(UInt64(st.st_mtim.tv_sec)); h.u64(UInt64(st.st_mtim.tv_nsec))
        h.u64(UInt64(st.st_ino)); h.u64(UInt64(st.st_dev))
        // The change time moves whenever the file is written, even by a copy that keeps mtime.
        h.u64(UInt64(st.st_ctim.tv_sec)); h.u64(UInt64(st.st_ctim.tv_nsec))
        return h.value
    }

    func ipvs() throws -> IpvsConfig {
        let plans = try Timing.measure("load+plan") { try self.plans() }
        let opts = IpvsOptions(masqueradeRandomFully: options.masqueradeRandomFully)
        defer { Parallel.releaseInBackground(plans) }
        return Timing.measure("ipvs backend") { IpvsBackend.build(plans, options: opts) }
    }

    func render() throws -> String {
        String(decoding: try renderBytes(), as: UTF8.self)
    }

    /// The rendered rules as UTF-8 bytes (what `render` writes: no String copy of a large script).
    func renderBytes() throws -> [UInt8] {
        switch options.backend {
        case .iptables:
            let rs = try iptables()
            defer { Parallel.releaseInBackground(rs) }
            return Timing.measure("render text") { rs.renderBytes(withJumps: options.withJumps) }
        case .nftables:
            let rs = try nftables()
            defer { Parallel.releaseInBackground(rs) }
            return Timing.measure("render text") { rs.renderBytes() }
        case .ipvs:
            let config = try ipvs()
            return Timing.measure("render text") {
                if let section = options.section { return Array(config.render(section.section, withJumps: options.withJumps).utf8) }
                return Array(config.render(withJumps: options.withJumps).utf8)
            }
        }
    }
}

struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the rules for a cluster (dry run).",
        discussion: """
        iptables output is iptables-restore input in a canonical order (tables alphabetically; chains
        KUBE-NODEPORTS, KUBE-SERVICES, then alphabetically; rules grouped by chain), with kube-proxy's
        chain names, hashes, rules and comments, so it diffs line by line against a real node.

        Examples:
          kuberules render --node-name node-a Fixtures/example
          kuberules render --config proxy.yaml --ip-family ipv6 cluster.yaml
          kubectl get svc,endpointslices,nodes -A -o json | kuberules render --node-name node-a -
          kuberules render --with-jumps cluster.yaml | unshare -n iptables-restore --noflush
        """)

    @OptionGroup var options: CompileOptions

    func run() throws {
        let bytes = try Pipeline(options: options).renderBytes()
        writeStandardOutput(bytes)
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare the rendered rules with a golden file.",
        discussion: """
        Exits 0 when the rendered rules equal the golden file, 1 with a unified diff on stdout when
        they differ (or the golden file is missing), 2 on bad input. --update rewrites the golden file.

        Examples:
          kuberules check --golden Fixtures/basic/expected.iptables --node-name n1 Fixtures/basic/cluster.yaml
          kuberules check --update --golden expected.iptables cluster.yaml
        """)

    @Option(name: .long, help: ArgumentHelp("The golden file to compare with.", valueName: "file"))
    var golden: String

    @Flag(name: .long, help: "Rewrite the golden file with the rendered rules.")
    var update = false

    @OptionGroup var options: CompileOptions

    func run() throws {
        let text = try Pipeline(options: options).render()
        if update {
            do {
                try Data(text.utf8).write(to: URL(fileURLWithPath: golden))
            } catch {
                warn("error: \(golden): cannot be written: \(error.localizedDescription)")
                throw ExitCode(Exit.badInput)
            }
            warn("updated \(golden)")
            return
        }
        guard let data = FileManager.default.contents(atPath: golden) else {
            print("golden file \(golden) does not exist (use --update to create it)")
            throw ExitCode(Exit.differences)
        }
        let expected = String(decoding: data, as: UTF8.self)
        if expected == text { return }
        print(UnifiedDiff.diff(expected, text, fromLabel: golden, toLabel: "rendered"), terminator: "")
        throw ExitCode(Exit.differences)
    }
}

/// `KUBERULES_TIMING=1` prints how long each phase took to stderr.
enum Timing {
    static let enabled = ProcessInfo.processInfo.environment["KUBERULES_TIMING"] == "1"
    static func measure<T>(_ what: String, _ body: () throws -> T) rethrows -> T {
        guard enabled else { return try body() }
        let start = DispatchTime.now().uptimeNanoseconds, cpu = cpuSeconds()
        let result = try body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        warn("timing: \(what): \(String(format: "%.1f", seconds * 1000)) ms (CPU \(String(format: "%.1f", (cpuSeconds() - cpu) * 1000)) ms)")
        return result
    }

    /// User and system time of the whole process so far (every thread).
    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    static func report(_ what: String, seconds: Double) {
        guard enabled else { return }
        warn("timing: \(what): \(String(format: "%.1f", seconds * 1000)) ms")
    }
}

/// Writes all of `bytes` to standard output (retrying short writes; a closed pipe ends it).
func writeStandardOutput(_ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buf in
        var off = 0
        while off < buf.count {
            let n = write(1, buf.baseAddress! + off, buf.count - off)
            if n > 0 { off += n } else if n < 0 && errno == EINTR { continue } else { return }
        }
    }
}
