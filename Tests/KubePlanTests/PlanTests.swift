import XCTest
import KubeModel
@testable import KubePlan

final class PlanTests: XCTestCase {
    func testHashTestVectors() {
        XCTAssertEqual(ChainHash.base32SHA256("ns1/svc1:p80tcp"), "XPGD46QRK7WJZT7O")
        XCTAssertEqual(ChainHash.base32SHA256("ns1/svc1:p80tcp10.180.0.1:80"), "SXIVWICOYRO3J4NJ")
        XCTAssertEqual(ChainHash.base32SHA256("ns5/svc5:p80tcp"), "NUKIZ6OKUXPJNT4C")
        XCTAssertEqual(ChainHash.base32SHA256("ns1/svc1tcp"), "AQI2S6QIMU7PVVRP")
        XCTAssertEqual(ChainHash.portProto("ns1/svc1:p80", .tcp), "XPGD46QRK7WJZT7O")
        XCTAssertEqual(ChainHash.endpoint("ns1/svc1:p80", .tcp, "10.180.0.1:80"), "SXIVWICOYRO3J4NJ")
    }

    func testServicePortName() {
        XCTAssertEqual(ServicePortName(namespace: "ns1", name: "svc1", port: "p80").description, "ns1/svc1:p80")
        XCTAssertEqual(ServicePortName(namespace: "ns1", name: "svc1", port: "").description, "ns1/svc1")
    }

    func ep(_ ip: String, ready: Bool = true, serving: Bool? = nil, terminating: Bool = false, node: String? = nil,
            zones: [String] = [], nodes: [String] = []) -> Endpoint {
        Endpoint(address: IPAddress(ip)!, ready: ready, serving: serving, terminating: terminating, nodeName: node,
                 zoneHints: zones, nodeHints: nodes)
    }

    func plan(_ endpoints: [Endpoint], type: ServiceType = .clusterIP, eTP: TrafficPolicy = .cluster, iTP: TrafficPolicy = .cluster,
              labels: [String: String] = [:]) -> ServicePortPlan {
        var cluster = Cluster()
        var svc = Service(ref: ObjectRef(kind: "Service", namespace: "ns", name: "svc", file: "f"))
        svc.type = type
        svc.clusterIPs = [IPAddress("10.96.0.1")!]
        svc.ports = [ServicePort(name: "p", proto: .tcp, port: 80, nodePort: type == .clusterIP ? 0 : 30000)]
        svc.externalTrafficPolicy = eTP
        svc.internalTrafficPolicy = iTP
        cluster.services = [svc]
        var slice = EndpointSlice(ref: ObjectRef(kind: "EndpointSlice", namespace: "ns", name: "svc-1", file: "f"),
                                  serviceName: "svc", family: .ipv4)
        slice.ports = [EndpointPort(name: "p", port: 8080, proto: .tcp)]
        slice.endpoints = endpoints
        cluster.slices = [slice]
        let node = NodeConfig(nodeName: "me", labels: labels)
        return Planner.plan(cluster: cluster, node: node, family: .ipv4).services[0]
    }

    func ips(_ e: [PlannedEndpoint]) -> [String] { e.map { $0.ip.description } }

    func testReadyEndpointsSortedAsStrings() {
        let p = plan([ep("10.0.0.2"), ep("10.0.0.10"), ep("10.0.0.3", ready: false)])
        XCTAssertEqual(ips(p.clusterEndpoints), ["10.0.0.10", "10.0.0.2"])
        XCTAssertTrue(p.hasEndpoints)
    }

    func testTerminatingFallback() {
        let p = plan([ep("10.0.0.1", ready: false, serving: true, terminating: true),
                      ep("10.0.0.2", ready: false, serving: false, terminating: true),
                      ep("10.0.0.3", ready: false)])
        XCTAssertEqual(ips(p.clusterEndpoints), ["10.0.0.1"])
        XCTAssertTrue(p.hasEndpoints)
        // Unset serving follows ready: a not-ready terminating endpoint is not serving.
        let q = plan([ep("10.0.0.1", ready: false, terminating: true)])
        XCTAssertTrue(q.clusterEndpoints.isEmpty)
        XCTAssertFalse(q.hasEndpoints)
        XCTAssertEqual(q.internalNoEndpoints, .reject)
    }

    func testLocalPolicyPrefersReadyThenTerminatingLocal() {
        let p = plan([ep("10.0.0.1", node: "me", ), ep("10.0.0.2", node: "other")], type: .nodePort, eTP: .local)
        XCTAssertEqual(ips(p.localEndpoints), ["10.0.0.1"])
        XCTAssertEqual(ips(p.clusterEndpoints), ["10.0.0.1", "10.0.0.2"])
        XCTAssertNil(p.externalNoEndpoints)
        let q = plan([ep("10.0.0.1", ready: false, serving: true, terminating: true, node: "me"), ep("10.0.0.2", node: "other")],
                     type: .nodePort, eTP: .local)
        XCTAssertEqual(ips(q.localEndpoints), ["10.0.0.1"])
        XCTAssertEqual(ips(q.clusterEndpoints), ["10.0.0.2"])
        XCTAssertEqual(ips(q.reachableEndpoints), ["10.0.0.1", "10.0.0.2"])
        let r = plan([ep("10.0.0.2", node: "other")], type: .nodePort, eTP: .local)
        XCTAssertEqual(r.externalNoEndpoints, .drop)
        XCTAssertNil(r.internalNoEndpoints)
    }

    func testInternalTrafficPolicyLocal() {
        let p = plan([ep("10.0.0.2", node: "other")], iTP: .local)
        XCTAssertEqual(p.internalNoEndpoints, .drop)
        XCTAssertFalse(p.usesClusterPolicy)
        let q = plan([ep("10.0.0.1", node: "me"), ep("10.0.0.2", node: "other")], iTP: .local)
        XCTAssertEqual(ips(q.reachableEndpoints), ["10.0.0.1"])
        XCTAssertEqual(q.internalTarget, .local)
    }

    func testZoneHints() {
        let zone = ["topology.kubernetes.io/zone": "a"]
        let p = plan([ep("10.0.0.1", zones: ["a"]), ep("10.0.0.2", zones: ["b"])], labels: zone)
        XCTAssertEqual(ips(p.clusterEndpoints), ["10.0.0.1"])
        // One ready endpoint without hints: hints are ignored.
        let q = plan([ep("10.0.0.1", zones: ["a"]), ep("10.0.0.2")], labels: zone)
        XCTAssertEqual(ips(q.clusterEndpoints), ["10.0.0.1", "10.0.0.2"])
        // No hint for our zone: ignored.
        let r = plan([ep("10.0.0.1", zones: ["b"]), ep("10.0.0.2", zones: ["c"])], labels: zone)
        XCTAssertEqual(ips(r.clusterEndpoints), ["10.0.0.1", "10.0.0.2"])
        // Node hints win when every ready endpoint has them.
        let s = plan([ep("10.0.0.1", zones: ["a"], nodes: ["other"]), ep("10.0.0.2", zones: ["a"], nodes: ["me"])], labels: zone)
        XCTAssertEqual(ips(s.clusterEndpoints), ["10.0.0.2"])
    }

    func testNameOrderIsStringOrder() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ab/:-09zé\u{0}") .map(String.init)
        for round in 0..<200 {
            let ascii = round % 2 == 0
            let pool = ascii ? alphabet.filter { $0.utf8.allSatisfy { $0 < 0x80 } } : alphabet
            let names = (0..<Int.random(in: 0...40, using: &rng)).map { _ in
                // Long shared prefixes, so that the 16-byte keys tie.
                (Bool.random(using: &rng) ? "ns-1234567890/svc-" : "") + (0..<Int.random(in: 0...6, using: &rng)).map { _ in pool.randomElement(using: &rng)! }.joined()
            }
            let order = Planner.orderOf(names: names)
            XCTAssertEqual(order.map { names[$0] }, names.sorted(), "round \(round)")
            var shuffled = names
            Planner.permute(&shuffled, by: order)
            XCTAssertEqual(shuffled, names.sorted())
        }
    }

    func testNodePortSelection() {
        var proxy = ProxyConfiguration()
        let node = { (p: ProxyConfiguration) in NodeConfig(nodeName: "n", nodeIPs: [IPAddress("192.168.0.2")!, IPAddress("10.1.0.2")!], proxy: p) }
        XCTAssertEqual(node(proxy).nodePortSelection(.ipv4).0, .all)
        XCTAssertTrue(node(proxy).nodePortSelection(.ipv4).localhost)
        XCTAssertFalse(node(proxy).nodePortSelection(.ipv6).localhost)
        proxy.nodePortAddresses = ["192.168.0.0/24", "2001:db8::/64"]
        XCTAssertEqual(node(proxy).nodePortSelection(.ipv4).0, .addresses([IPAddress("192.168.0.2")!]))
        XCTAssertFalse(node(proxy).nodePortSelection(.ipv4).localhost)
        proxy.nodePortAddresses = ["127.0.0.0/8", "10.0.0.0/8"]
        XCTAssertEqual(node(proxy).nodePortSelection(.ipv4).0, .addresses([IPAddress("10.1.0.2")!, IPAddress("127.0.0.1")!]))
        proxy.nodePortAddresses = ["primary"]
        XCTAssertEqual(node(proxy).nodePortSelection(.ipv4).0, .addresses([IPAddress("192.168.0.2")!]))
    }
}

/// `PlanHasher` coverage: a new stored property must be fed to the fingerprint (or excluded
/// there on purpose), or apply could trust a table that changed.
final class FingerprintCoverageTests: XCTestCase {
    func storedProperties(_ v: Any) -> [String] { Mirror(reflecting: v).children.compactMap(\.label) }

    func testEveryStoredPropertyIsFingerprinted() {
        let ep = PlannedEndpoint(ip: IPAddress("10.0.0.1")!, port: 80, isLocal: false, ready: true, serving: true, terminating: false)
        XCTAssertEqual(storedProperties(ep), ["ip", "port", "isLocal", "ready", "serving", "terminating", "zoneHints", "nodeHints"],
                       "update PlannedEndpoint.feed")
        var c = Cluster()
        var svc = Service(ref: ObjectRef(kind: "Service", namespace: "ns", name: "a", file: "f"))
        svc.clusterIPs = [IPAddress("10.96.0.1")!]
        svc.ports = [ServicePort(name: "p", proto: .tcp, port: 80)]
        c.services = [svc]
        let plan = Planner.plan(cluster: c, node: NodeConfig(nodeName: "n"), family: .ipv4)
        XCTAssertEqual(storedProperties(plan.services[0]), [
            "name", "proto", "clusterIP", "port", "nodePort", "externalIPs", "loadBalancerIPs", "sourceRanges",
            "healthCheckNodePort", "affinityTimeout", "internalPolicyLocal", "externalPolicyLocal", "clusterEndpoints",
            "localEndpoints", "reachableEndpoints", "hasEndpoints", "allowFromNode",
        ], "update ServicePortPlan.fingerprint")
        XCTAssertEqual(storedProperties(plan), [
            "family", "nodeName", "services", "masqueradeBit", "masqueradeAll", "localDetector", "nodePorts",
            "localhostNodePorts", "primaryNodeIP", "totalEndpoints", "ipvsScheduler", "nodeIPs",
        ], "update Plan.feedSettings")

        // Each field of a service port moves the fingerprint.
        let base = plan.services[0].fingerprint
        var m = plan.services[0]; m.port = 81; XCTAssertNotEqual(m.fingerprint, base)
        m = plan.services[0]; m.affinityTimeout = 10; XCTAssertNotEqual(m.fingerprint, base)
        m = plan.services[0]; m.allowFromNode.toggle(); XCTAssertNotEqual(m.fingerprint, base)
        m = plan.services[0]; m.clusterEndpoints = [ep]; XCTAssertNotEqual(m.fingerprint, base)
        m = plan.services[0]; m.localEndpoints = [ep]; XCTAssertNotEqual(m.fingerprint, base)
        // Without endpoints: an address change is not seen, emptiness is.
        var e = plan.services[0]; e.clusterEndpoints = [ep]
        var f = e; f.clusterEndpoints = [PlannedEndpoint(ip: IPAddress("10.0.0.2")!, port: 80, isLocal: false, ready: true, serving: true, terminating: false)]
        XCTAssertEqual(e.fingerprintWithoutEndpoints, f.fingerprintWithoutEndpoints)
        XCTAssertNotEqual(e.fingerprint, f.fingerprint)
        f.clusterEndpoints = []
        XCTAssertNotEqual(e.fingerprintWithoutEndpoints, f.fingerprintWithoutEndpoints)
    }

    func testHostPortText() {
        for (ip, port) in [("0.0.0.0", 0), ("10.128.0.10", 8080), ("255.255.255.255", 65535), ("1.2.3.4", 9), ("100.99.10.1", 10000)] {
            let e = PlannedEndpoint(ip: IPAddress(ip)!, port: port, isLocal: false, ready: true, serving: true, terminating: false)
            XCTAssertEqual(e.hostPort, "\(ip):\(port)")
            XCTAssertEqual(IPAddress(ip)!.description, ip)
        }
        let v6 = PlannedEndpoint(ip: IPAddress("fd00::1")!, port: 80, isLocal: false, ready: true, serving: true, terminating: false)
        XCTAssertEqual(v6.hostPort, "[fd00::1]:80")
    }

    /// Endpoints are ordered by their `IP:PORT` text, as kube-proxy orders them, whether the
    /// key is built without the text (IPv4) or is the text (a mix with IPv6).
    func testEndpointsSortByHostPortText() {
        var rng = SystemRandomNumberGenerator()
        let octets: [UInt32] = [0, 1, 2, 9, 10, 11, 99, 100, 101, 199, 200, 255]
        let ports = [0, 1, 8, 9, 10, 80, 443, 999, 8080, 9999, 10000, 65535]
        for round in 0..<200 {
            var eps = [PlannedEndpoint]()
            for _ in 0..<Int.random(in: 2...30, using: &rng) {
                var v: UInt32 = 0
                for _ in 0..<4 { v = v << 8 | octets.randomElement(using: &rng)! }
                let ip = round % 10 == 9 && Bool.random(using: &rng) ? IPAddress("fd00::" + String(v & 0xffff, radix: 16))! : IPAddress(v4: v)
                eps.append(PlannedEndpoint(ip: ip, port: ports.randomElement(using: &rng)!, isLocal: Bool.random(using: &rng),
                                           ready: true, serving: true, terminating: false))
            }
            // The same address and port is one endpoint: here the last one given wins.
            var last = [String: Bool]()
            for e in eps { last[e.hostPort] = e.isLocal }
            let got = PlannedEndpoint.sortedByHostPort(eps) { _, next in next }
            XCTAssertEqual(got.map(\.hostPort), last.keys.sorted())
            XCTAssertEqual(got.map(\.isLocal), last.keys.sorted().map { last[$0]! })
        }
    }
}
