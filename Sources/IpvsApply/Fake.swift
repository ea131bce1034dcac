import IpvsModel
import KubeModel

/// An in-memory kernel: keeps IPVS services, one dummy interface per name and its addresses,
/// answers with the kernel's errnos, logs every request and can be told to fail.
public final class FakeIpvsKernel: IpvsKernel {
    public private(set) var services: [IpvsServiceKey: IpvsVirtualServer] = [:]
    public private(set) var interfaces: [String: Set<IPAddress>] = [:]
    /// Every request performed (or refused), in order.
    public private(set) var log: [IpvsChange] = []
    public private(set) var reads = 0
    /// Returns an errno to make a request fail.
    public var failWhen: ((IpvsChange) -> Int32?)?

    public init() {}

    /// Installs state directly (services as found, e.g. with connection counters; foreign ones).
    public func install(_ s: IpvsVirtualServer) { services[s.key] = s }
    public func install(interface: String, addresses: [IPAddress] = []) { interfaces[interface] = Set(addresses) }

    /// Simulates traffic: sets a real server's connection counters.
    public func setConnections(_ key: IpvsServiceKey, _ address: IPAddress, _ port: Int, active: Int, inactive: Int) {
        guard var s = services[key], let i = s.destinations.firstIndex(where: { $0.address == address && $0.port == port }) else { return }
        s.destinations[i].activeConnections = active
        s.destinations[i].inactiveConnections = inactive
        services[key] = s
    }

    public func read(interface: String) throws -> IpvsKernelState {
        reads += 1
        return IpvsKernelState(services: services.values.sorted { $0.key < $1.key },
                               interfaceExists: interfaces[interface] != nil,
                               addresses: (interfaces[interface] ?? []).sorted())
    }

    public func perform(_ change: IpvsChange) throws {
        log.append(change)
        if let e = failWhen?(change) { throw refused(change, e) }
        switch change {
        case .createInterface(let n):
            guard interfaces[n] == nil else { throw refused(change, 17) }         // EEXIST
            interfaces[n] = []
        case .deleteInterface(let n):
            guard interfaces.removeValue(forKey: n) != nil else { throw refused(change, 19) }  // ENODEV
        case .addAddress(let ip, let n):
            guard interfaces[n] != nil else { throw refused(change, 19) }
            guard interfaces[n]!.insert(ip).inserted else { throw refused(change, 17) }
        case .deleteAddress(let ip, let n):
            guard interfaces[n] != nil else { throw refused(change, 19) }
            guard interfaces[n]!.remove(ip) != nil else { throw refused(change, 99) }  // EADDRNOTAVAIL
        case .addService(let s):
            guard services[s.key] == nil else { throw refused(change, 17) }
            var s = s
            s.destinations = []
            services[s.key] = s
        case .updateService(let s):
            guard let old = services[s.key] else { throw refused(change, 3) }   // ESRCH
            var s = s
            s.destinations = old.destinations
            services[s.key] = s
        case .deleteService(let k):
            guard services.removeValue(forKey: k) != nil else { throw refused(change, 3) }
        case .addDestination(let k, let d):
            guard var s = services[k] else { throw refused(change, 3) }
            guard !s.destinations.contains(where: { $0.sameEndpoint(d) }) else { throw refused(change, 17) }
            s.destinations.append(d)
            s.destinations.sort()
            services[k] = s
        case .updateDestination(let k, let d):
            guard var s = services[k] else { throw refused(change, 3) }
            guard let i = s.destinations.firstIndex(where: { $0.sameEndpoint(d) }) else { throw refused(change, 2) }  // ENOENT
            s.destinations[i].weight = d.weight
            s.destinations[i].forwardMethod = d.forwardMethod
            services[k] = s
        case .deleteDestination(let k, let d):
            guard var s = services[k] else { throw refused(change, 3) }
            guard let i = s.destinations.firstIndex(where: { $0.sameEndpoint(d) }) else { throw refused(change, 2) }
            s.destinations.remove(at: i)
            services[k] = s
        }
    }

    private func refused(_ c: IpvsChange, _ e: Int32) -> IpvsKernelError {
        let text: [Int32: String] = [2: "No such file or directory", 3: "No such process", 17: "File exists",
                                     19: "No such device", 99: "Cannot assign requested address"]
        return .refused(object: c.object, errno: e, message: text[e] ?? "error \(e)")
    }
}
