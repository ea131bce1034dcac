import ArgumentParser
import Foundation
import IptablesApply
import IptablesBackend
import IpvsApply
import IpvsBackend
import IpvsModel
import KubeModel
import Netlink

/// Opens the IPVS kernel, or exits 3 with the reason ("IPVS is not available in this kernel").
func openIpvsKernel() throws -> IpvsNetlink {
    do {
        return try IpvsNetlink()
    } catch {
        warn("error: \(error)")
        throw ExitCode(Exit.kernel)
    }
}

func ipvsDesiredState(_ config: IpvsConfig) -> IpvsDesiredState {
    IpvsDesiredState(interface: config.dummyInterface, families: Set(config.families.map(\.family)),
                     services: config.services, addresses: config.boundAddresses, nodeAddresses: config.nodeAddresses)
}

/// The host tools IPVS mode also needs: `ipset` and `iptables-restore` (run as processes).
enum HostTools {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func path(_ tool: String) -> String? {
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/" + tool) {
            return dir + "/" + tool
        }
        return nil
    }

    /// Runs a tool; returns its exit status and output.
    @discardableResult
    static func run(_ tool: String, _ args: [String], stdin: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        guard let exe = path(tool) else { throw Failure(description: "\(tool): not installed") }
        let (status, out, err) = try HostProcess.run(exe, args, input: stdin ?? "")
        return (status, out, err)
    }

    static func check(_ tool: String, _ args: [String], stdin: String? = nil, what: String) throws {
        let r = try run(tool, args, stdin: stdin)
        if r.status != 0 {
            throw Failure(description: "\(what): \(tool) \(args.joined(separator: " ")) exited \(r.status): \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Our ipsets as `ipset save` lists them (other sets are left out).
    static func currentIpsets() throws -> [String: Set<String>] {
        let r = try run("ipset", ["save"])
        if r.status != 0 { throw Failure(description: "ipset save exited \(r.status): \(r.stderr)") }
        let ours = Set(IpvsBackend.allSetNames)
        return IpsetDiff.parseSave(r.stdout).filter { ours.contains($0.key) }
    }

    static func restoreIpsets(_ script: String) throws {
        try check("ipset", ["restore"], stdin: script, what: "loading the ipsets")
    }

    /// Loads one family's IPVS-mode iptables rules through the iptables applier (partial sync of
    /// our chains, stale chains deleted, missing jumps inserted).
    static func restoreIptables(_ rs: IptablesRuleset, variant: IptablesVariantOption, stateDir: String) throws {
        let applier = IptablesKernelCommands.applier(variant: variant, family: rs.family, stateDir: stateDir)
        _ = try applier.apply(rs)
    }

    /// Removes our jumps and chains in one family (kube-proxy's cleanupIptablesLeftovers).
    static func removeIptables(_ family: IPFamily, variant: IptablesVariantOption, stateDir: String) throws -> Bool {
        guard path(family == .ipv6 ? "ip6tables-save" : "iptables-save") != nil else { return false }
        let applier = IptablesKernelCommands.applier(variant: variant, family: family, stateDir: stateDir)
        return !(try applier.cleanup().plan.isEmpty)
    }

    /// Destroys our ipsets that exist (after the iptables rules that refer to them are gone).
    static func destroyIpsets() throws -> [String] {
        let have = try currentIpsets().keys.sorted()
        for name in have { try check("ipset", ["destroy", name], what: "destroying ipset \(name)") }
        return have
    }
}

/// Runs a host-tool step; a failure exits 3 naming it.
func hostStep<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        warn("error: \(error)")
        throw ExitCode(Exit.kernel)
    }
}

/// What apply records for cleanup: the virtual servers on node addresses (NodePorts), which,
/// unlike those on kube-ipvs0, cannot be recognised as ours from the kernel alone.
enum IpvsOwnedRecord {
    static func path(_ stateDir: String) -> String { stateDir + "/ipvs-node-virtual-servers" }

    static func write(_ config: IpvsConfig, stateDir: String) throws {
        let bound = Set(config.boundAddresses)
        let lines = config.services.map(\.key).filter { !bound.contains($0.address) }.sorted()
            .map { "\($0.proto.rawValue) \($0.address) \($0.port)" }
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        try Data(lines.map { $0 + "\n" }.joined().utf8).write(to: URL(fileURLWithPath: path(stateDir)))
    }

    static func read(stateDir: String) -> Set<IpvsServiceKey> {
        guard let text = try? String(contentsOfFile: path(stateDir), encoding: .utf8) else { return [] }
        var keys = Set<IpvsServiceKey>()
        for line in text.split(separator: "\n") {
            let w = line.split(separator: " ")
            guard w.count == 3, let proto = L4Protocol(rawValue: String(w[0])), let ip = IPAddress(String(w[1])), let port = Int(w[2]) else { continue }
            keys.insert(IpvsServiceKey(proto: proto, address: ip, port: port))
        }
        return keys
    }
}

/// The sysctls kube-proxy's IPVS mode sets (per network namespace): conntrack for IPVS
/// connections (needed for masquerade and for traffic from the node itself), and expiry of
/// connections to removed real servers and of stale persistence templates.
enum IpvsSysctls {
    static let values = [("net/ipv4/vs/conntrack", "1"), ("net/ipv4/vs/expire_nodest_conn", "1"),
                         ("net/ipv4/vs/expire_quiescent_template", "1")]

    static func apply() throws {
        for (key, value) in values {
            let path = "/proc/sys/" + key
            guard let h = FileHandle(forWritingAtPath: path) else {
                throw HostTools.Failure(description: "cannot set \(key.replacingOccurrences(of: "/", with: ".")) (is ip_vs loaded?)")
            }
            defer { try? h.close() }
            try h.write(contentsOf: Data(value.utf8))
        }
    }
}

enum IpvsCommands {
    static func diff(_ options: CompileOptions) throws {
        let config = try Pipeline(options: options).ipvs()
        let kernel = try openIpvsKernel()
        let plan = try kernelOperation("reading IPVS state") { try IpvsApplier(kernel: kernel).plan(ipvsDesiredState(config)) }
        let ipsets = try hostStep { IpsetDiff.script(desired: config.ipsets, current: try HostTools.currentIpsets()) }
        // The iptables part, as the iptables applier sees it (per chain, with the state apply recorded).
        var iptables = [String]()
        for f in config.families {
            let applier = IptablesKernelCommands.applier(variant: options.iptables, family: f.family, stateDir: options.stateDir)
            let report = try kernelOperation("reading iptables") { try applier.diff(f.iptables, exact: false) }
            iptables += report.listing.map { "\(f.family == .ipv6 ? "ip6tables" : "iptables") " + $0 }
        }
        for line in plan.listing { print(line) }
        for line in ipsets.listing { print("ipset " + line) }
        for line in iptables { print(line) }
        if plan.isEmpty && ipsets.isEmpty && iptables.isEmpty {
            print("no differences")
            return
        }
        throw ExitCode(Exit.differences)
    }

    static func apply(_ options: CompileOptions, dryRun: Bool) throws {
        let config = try Pipeline(options: options).ipvs()
        let kernel = try openIpvsKernel()
        let applier = IpvsApplier(kernel: kernel)
        let desired = ipvsDesiredState(config)
        let start = Date()
        let plan = try kernelOperation("reading IPVS state") { try applier.plan(desired) }
        let ipsets = try hostStep { IpsetDiff.script(desired: config.ipsets, current: try HostTools.currentIpsets()) }
        let rules = config.families.reduce(0) { n, f in
            n + f.iptables.filter.totalRules + f.iptables.nat.totalRules
        }
        if dryRun {
            for line in ipsets.listing { print("ipset " + line) }
            for line in plan.listing { print(line) }
            print("dry run: \(plan.changes.count) IPVS/interface change(s), \(plan.draining.count) draining, \(plan.unchangedServices) unchanged virtual server(s); "
                  + "ipsets: \(ipsets.createdSets.count) created, \(ipsets.added) added, \(ipsets.removed) removed; iptables: \(rules) rules would be restored")
            return
        }
        // Order: sysctls, ipsets (the rules refer to them), IPVS additions, iptables, IPVS removals.
        try hostStep { try IpvsSysctls.apply() }
        try hostStep { try IpvsOwnedRecord.write(config, stateDir: options.stateDir) }
        try hostStep { try HostTools.restoreIpsets(ipsets.text) }
        try kernelOperation("applying IPVS") { try applier.perform(plan.additions) }
        try hostStep { for f in config.families { try HostTools.restoreIptables(f.iptables, variant: options.iptables, stateDir: options.stateDir) } }
        try kernelOperation("applying IPVS") { try applier.perform(plan.removals, alreadyApplied: plan.additions.count) }
        let ms = Int((Date().timeIntervalSince(start) * 1000).rounded())
        print("ipvs: \(plan.changes.count) change(s) (\(plan.additions.count) additions, \(plan.removals.count) removals), "
              + "\(plan.draining.count) real server(s) draining, \(plan.unchangedServices) virtual server(s) unchanged; "
              + "ipsets: \(ipsets.createdSets.count) created, \(ipsets.added) added, \(ipsets.removed) removed; "
              + "iptables: \(rules) rules restored; \(ms) ms")
    }

    static func cleanup(variant: IptablesVariantOption, stateDir: String) throws {
        let kernel = try openIpvsKernel()
        let owned = IpvsOwnedRecord.read(stateDir: stateDir)
        let changes = try kernelOperation("removing IPVS state") {
            try IpvsApplier(kernel: kernel).cleanup(interface: IpvsBackend.dummyInterface, alsoOwned: owned)
        }
        try? FileManager.default.removeItem(atPath: IpvsOwnedRecord.path(stateDir))
        var removed = changes.map { $0.object }
        for family in [IPFamily.ipv4, .ipv6] where try hostStep({ try HostTools.removeIptables(family, variant: variant, stateDir: stateDir) }) {
            removed.append("\(family.rawValue) iptables chains")
        }
        removed += try hostStep { try HostTools.destroyIpsets() }.map { "ipset \($0)" }
        print(removed.isEmpty ? "nothing to remove" : "removed " + removed.joined(separator: ", "))
    }
}
