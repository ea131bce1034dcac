import Foundation
import IptablesBackend
import KubeModel

/// The kernel's iptables as the applier sees it: save a table, restore a text with --noflush.
public protocol IptablesKernel {
    func save(table: String) throws -> String
    func restore(_ text: String) throws
    /// Our rules loaded into an empty scratch network namespace and saved back (how the kernel
    /// prints them), or nil when that is not possible.
    func canonical(_ restoreText: String, tables: [String]) throws -> String?
}

public struct IptablesError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Which iptables binaries to run: the system's alternative, or the nft / legacy variant explicitly.
public enum IptablesVariant: String, Sendable, CaseIterable {
    case system, nft, legacy
    func command(_ tool: String, family: IPFamily) -> String {
        let base = family == .ipv6 ? "ip6tables" : "iptables"
        switch self {
        case .system: return "\(base)-\(tool)"
        case .nft: return "\(base)-nft-\(tool)"
        case .legacy: return "\(base)-legacy-\(tool)"
        }
    }
}

/// The real kernel: iptables-save / iptables-restore --noflush -w of the chosen variant, in the
/// current network namespace.
public struct IptablesCommands: IptablesKernel {
    public var variant: IptablesVariant
    public var family: IPFamily
    public init(variant: IptablesVariant, family: IPFamily) { self.variant = variant; self.family = family }

    public func save(table: String) throws -> String {
        let cmd = variant.command("save", family: family)
        let (status, out, err) = try HostProcess.run(cmd, ["-t", table])
        guard status == 0 else { throw IptablesError("\(cmd) -t \(table) failed (exit \(status)): \(err.trimmed)") }
        return out
    }

    public func restore(_ text: String) throws {
        let cmd = variant.command("restore", family: family)
        let file = try HostProcess.temporaryFile(text)
        defer { try? FileManager.default.removeItem(atPath: file) }
        // The rules come on stdin: `-w FILE` would take FILE as -w's optional argument.
        let (status, _, err) = try HostProcess.run(cmd, ["--noflush", "-w"], stdin: file)
        guard status == 0 else { throw IptablesError("\(cmd) --noflush refused the rules (exit \(status)): \(err.trimmed)") }
    }

    public func canonical(_ restoreText: String, tables: [String]) throws -> String? {
        let restore = variant.command("restore", family: family), save = variant.command("save", family: family)
        let file = try HostProcess.temporaryFile(restoreText)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let script = "\(restore) --noflush \"$1\" && " + tables.map { "\(save) -t \($0)" }.joined(separator: " && ")
        let (status, out, _) = try HostProcess.run("unshare", ["-n", "sh", "-c", script, "sh", file])
        return status == 0 ? out : nil
    }
}

/// Runs the host tools (iptables-*, ipset): posix_spawn with output in temporary files.
public enum HostProcess {
    public static func temporaryFile(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "kuberules-\(getpid())-\(UInt32.random(in: 0 ... .max)).rules"
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw IptablesError("cannot write \(path)")
        }
        return path
    }

    /// Runs a program found on PATH; returns exit status, stdout, stderr. posix_spawn with the
    /// output in temporary files: Foundation's Process needs a loopback socket for its run loop,
    /// which a fresh network namespace (lo down) does not have.
    public static func run(_ program: String, _ args: [String], stdin: String = "/dev/null") throws -> (Int32, String, String) {
        let outPath = try temporaryFile(""), errPath = try temporaryFile("")
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_TRUNC, 0)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_TRUNC, 0)
        let argv = ([program] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, program, &actions, nil, argv, environ)
        guard rc == 0 else {
            throw IptablesError("cannot run \(program): \(String(cString: strerror(rc)))" + (rc == ENOENT ? " (install the iptables package)" : ""))
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7f) == 0
        let code = exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let out = FileManager.default.contents(atPath: outPath) ?? Data()
        let err = FileManager.default.contents(atPath: errPath) ?? Data()
        return (code, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    /// Runs a program with `input` on its stdin.
    public static func run(_ program: String, _ args: [String], input: String) throws -> (Int32, String, String) {
        let file = try temporaryFile(input)
        defer { try? FileManager.default.removeItem(atPath: file) }
        return try run(program, args, stdin: file)
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// The outcome of an apply, diff or cleanup.
public struct IptablesReport: Sendable {
    public var plan: SyncPlan
    public var fullSync: Bool
    public var seconds: Double
    public var listing: [String] { plan.changes.map(\.line) }

    public var summary: String {
        let p = plan
        return "iptables: \(p.written) chains written, \(p.deleted) deleted, \(p.unchangedChains) unchanged, "
            + "\(p.jumps) jumps; \(p.restoreRules) restore rules, \(p.restoreText.utf8.count) bytes"
            + (fullSync ? " (full sync)" : " (partial sync)")
            + String(format: "; %.3f s", seconds)
    }
}

/// Reads the kernel, plans, restores, records the state. The state file is what makes later
/// syncs partial; when it is missing or stale, every chain is written.
public struct IptablesApplier {
    public var kernel: any IptablesKernel
    public var statePath: String?

    public init(kernel: any IptablesKernel, statePath: String?) {
        self.kernel = kernel
        self.statePath = statePath
    }

    func read() throws -> [String: SavedTable] {
        var t = [String: SavedTable]()
        for name in IptablesSync.tables { t[name] = SavedTable.parse(try kernel.save(table: name), table: name) }
        return t
    }

    public func loadState() -> SyncState? {
        guard let statePath, let data = FileManager.default.contents(atPath: statePath) else { return nil }
        return try? JSONDecoder().decode(SyncState.self, from: data)
    }

    func saveState(_ s: SyncState?) throws {
        guard let statePath else { return }
        guard let s else { try? FileManager.default.removeItem(atPath: statePath); return }
        let dir = (statePath as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tmp = statePath + ".tmp"
        try JSONEncoder().encode(s).write(to: URL(fileURLWithPath: tmp))
        _ = rename(tmp, statePath)
    }

    /// What apply would do. With `exact`, chains are compared with the kernel through a scratch
    /// namespace when no state is recorded (slower, but tells "identical" from "unknown").
    public func diff(_ desired: IptablesRuleset, exact: Bool) throws -> IptablesReport {
        let start = Date()
        let kernelTables = try read()
        let state = loadState()
        var canonical: [String: SavedTable]? = nil
        if state == nil && exact, let text = try kernel.canonical(desired.render(), tables: IptablesSync.tables) {
            canonical = Dictionary(uniqueKeysWithValues: IptablesSync.tables.map { ($0, SavedTable.parse(text, table: $0)) })
        }
        let plan = IptablesSync.plan(desired: desired, kernel: kernelTables, state: state, canonical: canonical)
        return IptablesReport(plan: plan, fullSync: state == nil && canonical == nil, seconds: Date().timeIntervalSince(start))
    }

    public func apply(_ desired: IptablesRuleset, dryRun: Bool = false) throws -> IptablesReport {
        let start = Date()
        let state = loadState()
        let plan = IptablesSync.plan(desired: desired, kernel: try read(), state: state)
        if !dryRun && !plan.isEmpty {
            do {
                try kernel.restore(plan.restoreText)
            } catch {
                try? saveState(nil)  // the next apply is a full sync
                throw error
            }
        }
        if !dryRun && !(plan.isEmpty && state != nil) {
            let after = try read()
            try saveState(IptablesSync.state(desired: desired, kernel: after))
        }
        return IptablesReport(plan: plan, fullSync: state == nil, seconds: Date().timeIntervalSince(start))
    }

    public func cleanup(dryRun: Bool = false) throws -> IptablesReport {
        let start = Date()
        let plan = IptablesSync.cleanup(kernel: try read())
        if !dryRun && !plan.isEmpty { try kernel.restore(plan.restoreText) }
        if !dryRun { try saveState(nil) }
        return IptablesReport(plan: plan, fullSync: true, seconds: Date().timeIntervalSince(start))
    }
}
