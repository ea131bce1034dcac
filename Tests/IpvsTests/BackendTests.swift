import XCTest
import IptablesBackend
import IpvsModel
import KubeModel
import KubePlan
@testable import IpvsBackend

/// IPVS-mode specifics of the backend (the full layouts are covered by the expected.ipvs goldens).
final class IpvsBackendTests: XCTestCase {
    static let nodeIP = IPAddress("192.168.1.10")!

    func service(_ name: String, _ ip: String, type: ServiceType = .clusterIP, port: Int = 80, nodePort: Int = 0,
                 proto: L4Protocol = .tcp) -> Service {
        var svc = Service(ref: ObjectRef(kind: "Service", namespace: "ns", name: name, file: "f"))
        svc.type = type
        svc.clusterIPs = [IPAddress(ip)!]
        svc.ports = [ServicePort(name: "p", proto: proto, port: port, nodePort: nodePort)]
        return svc
    }

    func slice(_ svc: Service, _ eps: [Endpoint], port: Int = 8080) -> EndpointSlice {
        let family = svc.clusterIPs[0].family
        var s = EndpointSlice(ref: ObjectRef(kind: "EndpointSlice", namespace: "ns", name: svc.name + "-1", file: "f"),
                              serviceName: svc.name, family: family)
        s.ports = [EndpointPort(name: "p", port: port, proto: svc.ports[0].proto)]
        s.endpoints = eps
        return s
    }

    func build(_ cluster: Cluster, family: IPFamily = .ipv4, proxy: ProxyConfiguration = ProxyConfiguration(),
               nodeIPs: [IPAddress] = [nodeIP]) -> IpvsFamilyConfig {
        let node = NodeConfig(nodeName: "node-a", nodeIPs: nodeIPs, proxy: proxy)
        return IpvsBackend.buildFamily(Planner.plan(cluster: cluster, node: node, family: family))
    }

    func testClusterIPVirtualServerRealServersAndBinding() {
        var c = Cluster()
        let svc = service("web", "10.96.0.10")
        c.services = [svc]
        c.slices = [slice(svc, [Endpoint(address: IPAddress("10.244.1.5")!), Endpoint(address: IPAddress("10.244.1.4")!, ready: false)])]
        let f = build(c)
        XCTAssertEqual(f.services.count, 1)
        let vs = f.services[0]
        XCTAssertEqual(vs.key.description, "TCP 10.96.0.10:80")
        XCTAssertEqual(vs.scheduler, "rr")
        XCTAssertEqual(vs.flags, 0)
        XCTAssertEqual(vs.netmask, 0xffff_ffff)
        XCTAssertEqual(vs.destinations, [IpvsRealServer(address: IPAddress("10.244.1.5")!, port: 8080, weight: 1)])
        XCTAssertEqual(f.boundAddresses, [IPAddress("10.96.0.10")!])
        XCTAssertEqual(IpvsText.ipvsadm(f.services), "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1\n")
        XCTAssertEqual(f.ipsets.first { $0.name == "KUBE-CLUSTER-IP" }?.entries, ["10.96.0.10,tcp:80"])
        XCTAssertEqual(f.ipsets.first { $0.name == "KUBE-IPVS-IPS" }?.entries, ["10.96.0.10"])
        XCTAssertEqual(f.ipsets.count, 17)
    }

    func testAffinityIsPersistenceAndMaglevGetsTheHashFlag() {
        var c = Cluster()
        var svc = service("sticky", "10.96.0.11", proto: .udp)
        svc.affinityTimeout = 10800
        c.services = [svc]
        var proxy = ProxyConfiguration()
        proxy.ipvsScheduler = "mh"
        let vs = build(c, proxy: proxy).services[0]
        XCTAssertEqual(vs.flags, IpvsFlags.persistent | IpvsFlags.sched2)
        XCTAssertEqual(vs.timeout, 10800)
        XCTAssertEqual(IpvsText.ipvsadm([vs]), "-A -u 10.96.0.11:80 -s mh -p 10800 -b mh-port\n")
    }

    func testNodePortOnSelectedNodeAddressesNotBound() {
        var c = Cluster()
        var svc = service("np", "10.96.0.12", type: .nodePort, nodePort: 30080)
        svc.externalTrafficPolicy = .local
        c.services = [svc]
        c.slices = [slice(svc, [Endpoint(address: IPAddress("10.244.2.2")!, nodeName: "node-b"),
                                Endpoint(address: IPAddress("10.244.1.2")!, nodeName: "node-a")])]
        let f = build(c, nodeIPs: [Self.nodeIP, IPAddress("192.168.1.11")!])
        XCTAssertEqual(f.services.map(\.key.hostPort), ["10.96.0.12:80", "192.168.1.10:30080", "192.168.1.11:30080"])
        // eTP=Local: NodePort virtual servers get the local endpoint only; ClusterIP gets both.
        XCTAssertEqual(f.services[1].destinations.map(\.hostPort), ["10.244.1.2:8080"])
        XCTAssertEqual(f.services[0].destinations.map(\.hostPort), ["10.244.1.2:8080", "10.244.2.2:8080"])
        XCTAssertEqual(f.boundAddresses, [IPAddress("10.96.0.12")!])
        let sets = Dictionary(uniqueKeysWithValues: f.ipsets.map { ($0.name, $0.entries) })
        XCTAssertEqual(sets["KUBE-NODE-PORT-TCP"], ["30080"])
        XCTAssertEqual(sets["KUBE-NODE-PORT-LOCAL-TCP"], ["30080"])
        XCTAssertEqual(sets["KUBE-LOOP-BACK"], ["10.244.1.2,tcp:8080,10.244.1.2"])
        let nat = f.iptables.nat.chainLines("KUBE-NODE-PORT")
        XCTAssertEqual(nat.first, "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN")
    }

    func testLocalPolicyWithoutLocalEndpointsFallsBackToClusterEndpoints() {
        var c = Cluster()
        var svc = service("np", "10.96.0.13", type: .nodePort, nodePort: 30081)
        svc.externalTrafficPolicy = .local
        c.services = [svc]
        c.slices = [slice(svc, [Endpoint(address: IPAddress("10.244.2.2")!, nodeName: "node-b")])]
        let f = build(c)
        XCTAssertEqual(f.services.first { $0.key.port == 30081 }?.destinations.map(\.hostPort), ["10.244.2.2:8080"])
    }

    func testSCTPNodePortUsesHashSetPerNodeAddress() {
        var c = Cluster()
        c.services = [service("sctp", "10.96.0.14", type: .nodePort, nodePort: 30082, proto: .sctp)]
        let f = build(c)
        XCTAssertEqual(f.ipsets.first { $0.name == "KUBE-NODE-PORT-SCTP-HASH" }?.entries, ["192.168.1.10,sctp:30082"])
        XCTAssertEqual(IpvsText.ipvsadm(f.services.filter { $0.key.port == 30082 }), "-A --sctp-service 192.168.1.10:30082 -s rr\n")
    }

    func testLoadBalancerSourceRangesAndNodeAccess() {
        var c = Cluster()
        var svc = service("lb", "10.96.0.15", type: .loadBalancer, nodePort: 30083)
        svc.loadBalancerIngress = [LoadBalancerIngress(ip: IPAddress("203.0.113.9")!)]
        svc.loadBalancerSourceRanges = [CIDR("198.51.100.0/24")!, CIDR("0.0.0.0/0")!]
        c.services = [svc]
        let f = build(c)
        let sets = Dictionary(uniqueKeysWithValues: f.ipsets.map { ($0.name, $0.entries) })
        XCTAssertEqual(sets["KUBE-LOAD-BALANCER-FW"], ["203.0.113.9,tcp:80"])
        // 0.0.0.0/0 cannot be stored by ipset: its two halves are.
        XCTAssertEqual(sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"], ["203.0.113.9,tcp:80,0.0.0.0/1", "203.0.113.9,tcp:80,128.0.0.0/1",
                                                              "203.0.113.9,tcp:80,198.51.100.0/24"])
        // The node IP is in 0.0.0.0/0: the LB IP may reach itself.
        XCTAssertEqual(sets["KUBE-LOAD-BALANCER-SOURCE-IP"], ["203.0.113.9,tcp:80,203.0.113.9"])
        XCTAssertEqual(f.iptables.filter.chainLines("KUBE-IPVS-OUT-FILTER"), [])
        XCTAssertTrue(f.boundAddresses.contains(IPAddress("203.0.113.9")!))
    }

    func testIPv6SetNamesFamilyAndNetmask() {
        var c = Cluster()
        c.services = [service("v6", "fd00::10", type: .nodePort, nodePort: 30084)]
        let f = build(c, family: .ipv6, nodeIPs: [IPAddress("fd00:1::10")!])
        XCTAssertEqual(f.services.first?.netmask, 128)
        XCTAssertEqual(f.ipsets.first { $0.name == "KUBE-6-CLUSTER-IP" }?.createLine,
                       "create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536 -exist")
        XCTAssertTrue(f.ipsets.contains { $0.name == "KUBE-6-LOAD-BALANCER-SOURCE-CID" })
        XCTAssertTrue(f.ipsets.allSatisfy { $0.name.utf8.count <= 31 })
        XCTAssertEqual(IpvsText.ipvsadm(f.services), "-A -t [fd00::10]:80 -s rr\n-A -t [fd00:1::10]:30084 -s rr\n")
        XCTAssertEqual(f.iptables.nat.chainLines("KUBE-SERVICES").first, "-A KUBE-SERVICES -s ::1/128 -j RETURN")
    }

    func testMasqueradeMarkIsWrittenAsKubeProxyIPVSModeDoes() {
        XCTAssertEqual(IpvsBackend.markText(0x4000), "0x004000")
        XCTAssertEqual(IpvsBackend.markText(1), "0x000001")
        XCTAssertEqual(IpvsBackend.markText(0x8000_0000), "0x80000000")
    }

    func testClusterIPMasqueradeWithoutLocalDetectorMatchesVIPSources() {
        var c = Cluster()
        c.services = [service("web", "10.96.0.16")]
        let f = build(c)  // no clusterCIDR: no local detector
        XCTAssertTrue(f.iptables.nat.chainLines("KUBE-SERVICES").contains(
            "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"))
    }

    func testRenderSectionsAreSeparatedAndExtractable() {
        var c = Cluster()
        c.services = [service("web", "10.96.0.17")]
        let node = NodeConfig(nodeName: "node-a", nodeIPs: [Self.nodeIP])
        let config = IpvsBackend.build([Planner.plan(cluster: c, node: node, family: .ipv4)])
        let text = config.render()
        let lines = text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.filter { $0.hasPrefix("# --- ") }, ["# --- ipvsadm -R ---", "# --- ipset restore ---", "# --- iptables-restore ---"])
        XCTAssertEqual(text, "# --- ipvsadm -R ---\n" + config.render(.ipvsadm) + "# --- ipset restore ---\n" + config.render(.ipset)
                       + "# --- iptables-restore ---\n" + config.render(.iptables))
    }
}
