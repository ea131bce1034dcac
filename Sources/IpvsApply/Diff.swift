import IpvsModel
import KubeModel

/// What the kernel should hold, for the families we manage.
public struct IpvsDesiredState: Sendable {
    public var interface: String
    public var families: Set<IPFamily>
    public var services: [IpvsVirtualServer]
    /// Addresses for the dummy interface.
    public var addresses: [IPAddress]
    /// Node addresses carrying NodePort virtual servers: virtual servers on them are ours too.
    public var nodeAddresses: [IPAddress]

    public init(interface: String, families: Set<IPFamily>, services: [IpvsVirtualServer],
                addresses: [IPAddress], nodeAddresses: [IPAddress]) {
        self.interface = interface; self.families = families; self.services = services
        self.addresses = addresses; self.nodeAddresses = nodeAddresses
    }
}

/// The ordered changes of one apply, in two phases: `additions` (interface, new and changed
/// services, each followed by its real servers, then addresses) and `removals` (real servers of
/// kept services, then services, then addresses). Real servers kept while they drain are listed
/// in `draining`.
public struct IpvsPlan: Sendable {
    public var additions: [IpvsChange] = []
    public var removals: [IpvsChange] = []
    /// TCP real servers at weight 0 that still have connections: deleted by a later apply.
    public var draining: [(IpvsServiceKey, IpvsRealServer)] = []
    public var unchangedServices = 0

    public var changes: [IpvsChange] { additions + removals }
    public var isEmpty: Bool { additions.isEmpty && removals.isEmpty }

    public var listing: [String] {
        changes.map { $0.description } + draining.map { k, d in
            "# draining: -a \(IpvsText.serviceArgs(k)) -r \(d.hostPort) -w 0 (\(d.activeConnections) active, \(d.inactiveConnections) inactive connections)"
        }
    }
}

public enum IpvsDiff {
    /// The changes that turn `current` into `desired`.
    ///
    /// Ownership: a virtual server is ours when its family is managed and its address is on the
    /// dummy interface (now or desired) or is a NodePort node address; nothing else is touched.
    /// A real server that is no longer wanted: UDP and SCTP ones are deleted at once; a TCP one
    /// without connections (ACTIVE_CONNS + INACT_CONNS == 0) too; a TCP one with connections is
    /// set to weight 0 (no new connections) and deleted by the first later apply that finds it
    /// idle. A wanted real server found at weight 0 gets its weight back.
    public static func plan(desired: IpvsDesiredState, current: IpvsKernelState) -> IpvsPlan {
        var plan = IpvsPlan()
        let iface = desired.interface
        let have = Dictionary(current.services.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let want = Dictionary(desired.services.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let currentAddresses = Set(current.addresses.filter { desired.families.contains($0.family) })
        let wantAddresses = Set(desired.addresses)
        let owned = currentAddresses.union(wantAddresses).union(desired.nodeAddresses)

        if !current.interfaceExists { plan.additions.append(.createInterface(iface)) }

        var staleDestinations = [IpvsChange]()
        for s in want.values.sorted(by: { $0.key < $1.key }) {
            guard let old = have[s.key] else {
                plan.additions.append(.addService(s))
                for d in s.destinations { plan.additions.append(.addDestination(s.key, d)) }
                continue
            }
            var changed = false
            if !old.sameSettings(s) { plan.additions.append(.updateService(s)); changed = true }
            for d in s.destinations {
                if let o = old.destinations.first(where: { $0.sameEndpoint(d) }) {
                    if !o.sameSettings(d) { plan.additions.append(.updateDestination(s.key, d)); changed = true }
                } else {
                    plan.additions.append(.addDestination(s.key, d)); changed = true
                }
            }
            for o in old.destinations where !s.destinations.contains(where: { $0.sameEndpoint(o) }) {
                let connections = o.activeConnections + o.inactiveConnections
                if s.key.proto != .tcp || connections == 0 {
                    staleDestinations.append(.deleteDestination(s.key, o)); changed = true
                } else if o.weight != 0 {
                    var z = o
                    z.weight = 0
                    staleDestinations.append(.updateDestination(s.key, z)); changed = true
                } else {
                    plan.draining.append((s.key, o))
                }
            }
            if !changed { plan.unchangedServices += 1 }
        }
        for a in wantAddresses.subtracting(currentAddresses).sorted() {
            plan.additions.append(.addAddress(a, interface: iface))
        }

        plan.removals = staleDestinations
        for s in current.services.sorted(by: { $0.key < $1.key })
        where want[s.key] == nil && desired.families.contains(s.key.family) && owned.contains(s.key.address) {
            plan.removals.append(.deleteService(s.key))
        }
        for a in currentAddresses.subtracting(wantAddresses).sorted() {
            plan.removals.append(.deleteAddress(a, interface: iface))
        }
        return plan
    }

    /// `cleanup`: every virtual server whose address is on the dummy interface, then the
    /// interface itself (which takes its addresses with it). Nothing else.
    /// Deletes the virtual servers on the dummy interface's addresses and those listed in
    /// `alsoOwned` (NodePort virtual servers on node addresses, recorded by apply), then the interface.
    public static func cleanup(interface: String, current: IpvsKernelState, alsoOwned: Set<IpvsServiceKey> = []) -> [IpvsChange] {
        let bound = current.interfaceExists ? Set(current.addresses) : []
        var out = current.services.filter { bound.contains($0.key.address) || alsoOwned.contains($0.key) }.sorted { $0.key < $1.key }
            .map { IpvsChange.deleteService($0.key) }
        if current.interfaceExists { out.append(.deleteInterface(interface)) }
        return out
    }
}

/// A failed apply: which change, after how many were applied.
public struct IpvsApplyError: Error, Sendable, CustomStringConvertible {
    public var change: IpvsChange
    public var applied: Int
    public var underlying: IpvsKernelError
    public var description: String {
        "\(underlying) (request: \(change.description); \(applied) earlier change(s) applied, IPVS has no transactions)"
    }
}

/// Reads the kernel, plans, applies change by change.
public final class IpvsApplier {
    public let kernel: IpvsKernel
    public init(kernel: IpvsKernel) { self.kernel = kernel }

    public func plan(_ desired: IpvsDesiredState) throws -> IpvsPlan {
        IpvsDiff.plan(desired: desired, current: try kernel.read(interface: desired.interface))
    }

    /// Performs changes in order; stops at the first refusal.
    public func perform(_ changes: [IpvsChange], alreadyApplied: Int = 0) throws {
        for (i, c) in changes.enumerated() {
            do {
                try kernel.perform(c)
            } catch let e as IpvsKernelError {
                throw IpvsApplyError(change: c, applied: alreadyApplied + i, underlying: e)
            }
        }
    }

    /// Everything at once (additions, `between`, removals). `between` runs after the
    /// additions (the CLI loads the iptables rules there).
    @discardableResult
    public func apply(_ desired: IpvsDesiredState, between: () throws -> Void = {}) throws -> IpvsPlan {
        let plan = try plan(desired)
        try perform(plan.additions)
        try between()
        try perform(plan.removals, alreadyApplied: plan.additions.count)
        return plan
    }

    /// Removes the virtual servers on the dummy interface and the interface. Returns the changes made.
    @discardableResult
    public func cleanup(interface: String, alsoOwned: Set<IpvsServiceKey> = []) throws -> [IpvsChange] {
        let changes = IpvsDiff.cleanup(interface: interface, current: try kernel.read(interface: interface), alsoOwned: alsoOwned)
        try perform(changes)
        return changes
    }
}
