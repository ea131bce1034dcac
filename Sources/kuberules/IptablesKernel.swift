import ArgumentParser
import Foundation
import IptablesApply
import IptablesBackend
import KubeModel

enum IptablesVariantOption: String, ExpressibleByArgument, CaseIterable {
    case system, nft, legacy
    var variant: IptablesVariant { IptablesVariant(rawValue: rawValue)! }
}

/// `apply` / `diff` / `cleanup` for the iptables backend (one family per run, as ip(6)tables are separate).
enum IptablesKernelCommands {
    static func applier(variant: IptablesVariantOption, family: IPFamily, stateDir: String) -> IptablesApplier {
        let kernel = IptablesCommands(variant: variant.variant, family: family)
        let state = stateDir.isEmpty ? nil : "\(stateDir)/iptables-\(variant.rawValue)-\(family == .ipv6 ? "ipv6" : "ipv4").json"
        return IptablesApplier(kernel: kernel, statePath: state)
    }

    static func diff(_ options: CompileOptions) throws {
        let desired = try Pipeline(options: options).iptables()
        let applier = applier(variant: options.iptables, family: desired.family, stateDir: options.stateDir)
        let report = try kernelOperation("reading iptables") { try applier.diff(desired, exact: true) }
        if report.plan.isEmpty {
            print("no differences")
            return
        }
        for line in report.listing { print(line) }
        throw ExitCode(Exit.differences)
    }

    static func apply(_ options: CompileOptions, dryRun: Bool) throws {
        let desired = try Pipeline(options: options).iptables()
        let applier = applier(variant: options.iptables, family: desired.family, stateDir: options.stateDir)
        let report = try kernelOperation("applying iptables rules") { try applier.apply(desired, dryRun: dryRun) }
        if dryRun {
            for line in report.listing { print(line) }
            print("dry run: " + report.summary)
        } else {
            print(report.summary)
        }
    }

    static func cleanup(variant: IptablesVariantOption, family: IPFamily, stateDir: String) throws {
        let applier = applier(variant: variant, family: family, stateDir: stateDir)
        let report = try kernelOperation("removing iptables rules") { try applier.cleanup() }
        print(report.plan.isEmpty ? "nothing to remove" : "iptables: removed \(report.plan.deleted) chains and \(report.plan.jumps) jumps")
    }
}
