import ArgumentParser
import Foundation
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
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out; p.standardError = err; p.standardInput = inp
        try p.run()
        if let stdin { inp.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? inp.fileHandleForWriting.close()
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errBox.data, as: UTF8.self))
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

    /// Loads one family's IPVS-mode iptables rules: `iptables-restore --noflush` of the rendered
    /// section (our chains are declared, hence flushed and rewritten), then the jumps from the
    /// built-in chains where missing. The one place that talks to iptables: to be replaced by
    /// the general iptables applier.
    static func restoreIptables(_ rs: IptablesRuleset) throws {
        let v6 = rs.family == .ipv6
        try check(v6 ? "ip6tables-restore" : "iptables-restore", ["-w", "--noflush"], stdin: rs.render(),
                  what: "loading the iptables rules (\(rs.family.rawValue))")
        let tool = v6 ? "ip6tables" : "iptables"
        for j in rs.jumps {
            let spec = ["-m", "comment", "--comment", j.comment, "-j", j.targetChain]
            if try run(tool, ["-w", "-t", j.table, "-C", j.sourceChain] + spec).status != 0 {
                try check(tool, ["-w", "-t", j.table, "-I", j.sourceChain] + spec, what: "jump \(j.table) \(j.sourceChain) -> \(j.targetChain)")
            }
        }
    }

    /// Removes IPVS mode's jumps and chains in one family (kube-proxy's cleanupIptablesLeftovers).
    static func removeIptables(_ family: IPFamily) throws -> Bool {
        let tool = family == .ipv6 ? "ip6tables" : "iptables"
        guard path(tool) != nil else { return false }
        for j in IpvsBackend.jumps {
            let spec = ["-m", "comment", "--comment", j.comment, "-j", j.targetChain]
            while try run(tool, ["-w", "-t", j.table, "-D", j.sourceChain] + spec).status == 0 {}
        }
        var text = ""
        var existing = false
        for (table, chains) in [("nat", IpvsBackend.natChains), ("filter", IpvsBackend.filterChains)] {
            let have = Set(try run(tool + "-save", ["-t", table]).stdout.split(separator: "\n")
                .filter { $0.hasPrefix(":") }.map { String($0.dropFirst().prefix { $0 != " " }) })
            let ours = chains.filter { have.contains($0) }
            guard !ours.isEmpty else { continue }
            existing = true
            text += "*\(table)\n" + ours.map { ":\($0) - [0:0]\n" }.joined() + ours.map { "-X \($0)\n" }.joined() + "COMMIT\n"
        }
        if existing { try check(tool + "-restore", ["-w", "--noflush"], stdin: text, what: "removing the \(family.rawValue) chains") }
        return existing
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

enum IpvsCommands {
    static func diff(_ options: CompileOptions) throws {
        let config = try Pipeline(options: options).ipvs()
        let kernel = try openIpvsKernel()
        let plan = try kernelOperation("reading IPVS state") { try IpvsApplier(kernel: kernel).plan(ipvsDesiredState(config)) }
        let ipsets = try hostStep { IpsetDiff.script(desired: config.ipsets, current: try HostTools.currentIpsets()) }
        for line in plan.listing { print(line) }
        for line in ipsets.listing { print("ipset " + line) }
        if plan.isEmpty && ipsets.isEmpty {
            print("no differences (IPVS and ipsets; iptables rules are not compared)")
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
            n + f.iptables.filter.rules.values.reduce(0) { $0 + $1.count } + f.iptables.nat.rules.values.reduce(0) { $0 + $1.count }
        }
        if dryRun {
            for line in ipsets.listing { print("ipset " + line) }
            for line in plan.listing { print(line) }
            print("dry run: \(plan.changes.count) IPVS/interface change(s), \(plan.draining.count) draining, \(plan.unchangedServices) unchanged virtual server(s); "
                  + "ipsets: \(ipsets.createdSets.count) created, \(ipsets.added) added, \(ipsets.removed) removed; iptables: \(rules) rules would be restored")
            return
        }
        // Order: ipsets (the rules refer to them), IPVS additions, iptables, IPVS removals.
        try hostStep { try HostTools.restoreIpsets(ipsets.text) }
        try kernelOperation("applying IPVS") { try applier.perform(plan.additions) }
        try hostStep { for f in config.families { try HostTools.restoreIptables(f.iptables) } }
        try kernelOperation("applying IPVS") { try applier.perform(plan.removals, alreadyApplied: plan.additions.count) }
        let ms = Int((Date().timeIntervalSince(start) * 1000).rounded())
        print("ipvs: \(plan.changes.count) change(s) (\(plan.additions.count) additions, \(plan.removals.count) removals), "
              + "\(plan.draining.count) real server(s) draining, \(plan.unchangedServices) virtual server(s) unchanged; "
              + "ipsets: \(ipsets.createdSets.count) created, \(ipsets.added) added, \(ipsets.removed) removed; "
              + "iptables: \(rules) rules restored; \(ms) ms")
    }

    static func cleanup() throws {
        let kernel = try openIpvsKernel()
        let changes = try kernelOperation("removing IPVS state") { try IpvsApplier(kernel: kernel).cleanup(interface: IpvsBackend.dummyInterface) }
        var removed = changes.map { $0.object }
        for family in [IPFamily.ipv4, .ipv6] where try hostStep({ try HostTools.removeIptables(family) }) {
            removed.append("\(family.rawValue) iptables chains")
        }
        removed += try hostStep { try HostTools.destroyIpsets() }.map { "ipset \($0)" }
        print(removed.isEmpty ? "nothing to remove" : "removed " + removed.joined(separator: ", "))
    }
}
