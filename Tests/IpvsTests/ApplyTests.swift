import XCTest
import IpvsModel
import KubeModel
@testable import IpvsApply

/// Diff, ordering, draining and ownership against the in-memory kernel (no privileges).
final class IpvsApplyTests: XCTestCase {
    let ip = { (s: String) in IPAddress(s)! }

    func key(_ a: String, _ port: Int, _ p: L4Protocol = .tcp) -> IpvsServiceKey { IpvsServiceKey(proto: p, address: ip(a), port: port) }
    func vs(_ a: String, _ port: Int, _ p: L4Protocol = .tcp, dests: [String] = [], sched: String = "rr") -> IpvsVirtualServer {
        IpvsVirtualServer(key: key(a, port, p), scheduler: sched, destinations: dests.map { IpvsRealServer(address: ip($0), port: 8080) })
    }
    func desired(_ services: [IpvsVirtualServer], addresses: [String], nodes: [String] = ["192.168.1.10"]) -> IpvsDesiredState {
        IpvsDesiredState(interface: "kube-ipvs0", families: [.ipv4], services: services,
                         addresses: addresses.map(ip), nodeAddresses: nodes.map(ip))
    }

    func testFirstApplyCreatesInterfaceServicesBeforeTheirDestsThenAddresses() throws {
        let k = FakeIpvsKernel()
        let a = IpvsApplier(kernel: k)
        let want = desired([vs("10.96.0.1", 443, dests: ["10.0.0.1", "10.0.0.2"]), vs("192.168.1.10", 30080, dests: ["10.0.0.3"])],
                           addresses: ["10.96.0.1"])
        try a.apply(want)
        XCTAssertEqual(k.log.map(\.description), [
            "ip link add kube-ipvs0 type dummy",
            "-A -t 10.96.0.1:443 -s rr",
            "-a -t 10.96.0.1:443 -r 10.0.0.1:8080 -m -w 1",
            "-a -t 10.96.0.1:443 -r 10.0.0.2:8080 -m -w 1",
            "-A -t 192.168.1.10:30080 -s rr",
            "-a -t 192.168.1.10:30080 -r 10.0.0.3:8080 -m -w 1",
            "ip addr add 10.96.0.1/32 dev kube-ipvs0",
        ])
        // Second apply: nothing to do.
        XCTAssertTrue(try a.plan(want).isEmpty)
        XCTAssertEqual(try a.plan(want).unchangedServices, 2)
    }

    func testRemovalsComeLastInReverseOrderAndOnlyOwnedServicesGo() throws {
        let k = FakeIpvsKernel()
        k.install(interface: "kube-ipvs0", addresses: [ip("10.96.0.1"), ip("10.96.0.2")])
        k.install(vs("10.96.0.1", 443, .udp, dests: ["10.0.0.1", "10.0.0.9"]))
        k.install(vs("10.96.0.2", 80, dests: ["10.0.0.5"]))
        k.install(vs("192.168.1.10", 30080, dests: ["10.0.0.5"]))   // stale NodePort on a node address: ours
        k.install(vs("172.16.0.1", 53, .udp, dests: ["172.16.0.2"])) // someone else's
        let a = IpvsApplier(kernel: k)
        var between = -1
        try a.apply(desired([vs("10.96.0.1", 443, .udp, dests: ["10.0.0.1"])], addresses: ["10.96.0.1"]),
                    between: { between = k.log.count })
        XCTAssertEqual(between, 0)
        XCTAssertEqual(k.log.map(\.description), [
            "-d -u 10.96.0.1:443 -r 10.0.0.9:8080",           // UDP real server: deleted at once
            "-D -t 10.96.0.2:80",
            "-D -t 192.168.1.10:30080",
            "ip addr del 10.96.0.2/32 dev kube-ipvs0",
        ])
        XCTAssertNotNil(k.services[key("172.16.0.1", 53, .udp)], "a virtual server not on our addresses is left alone")
    }

    func testRemovedTCPRealServerDrainsAtWeightZeroThenGoes() throws {
        let k = FakeIpvsKernel()
        let a = IpvsApplier(kernel: k)
        let svcKey = key("10.96.0.1", 80)
        try a.apply(desired([vs("10.96.0.1", 80, dests: ["10.0.0.1", "10.0.0.2"])], addresses: ["10.96.0.1"]))
        k.setConnections(svcKey, ip("10.0.0.2"), 8080, active: 3, inactive: 1)
        let fewer = desired([vs("10.96.0.1", 80, dests: ["10.0.0.1"])], addresses: ["10.96.0.1"])

        var plan = try a.apply(fewer)
        XCTAssertEqual(plan.changes.map(\.description), ["-e -t 10.96.0.1:80 -r 10.0.0.2:8080 -m -w 0"])
        XCTAssertEqual(k.services[svcKey]?.destinations.map(\.weight), [1, 0])

        // Still busy: kept, reported, and not counted as a difference.
        plan = try a.plan(fewer)
        XCTAssertTrue(plan.isEmpty)
        XCTAssertEqual(plan.draining.count, 1)
        XCTAssertTrue(plan.listing[0].hasPrefix("# draining: -a -t 10.96.0.1:80 -r 10.0.0.2:8080 -w 0"))

        // Idle: deleted by the next apply.
        k.setConnections(svcKey, ip("10.0.0.2"), 8080, active: 0, inactive: 0)
        plan = try a.apply(fewer)
        XCTAssertEqual(plan.changes.map(\.description), ["-d -t 10.96.0.1:80 -r 10.0.0.2:8080"])
        XCTAssertEqual(k.services[svcKey]?.destinations.map(\.hostPort), ["10.0.0.1:8080"])
    }

    func testIdleTCPRealServerIsDeletedAtOnceAndADrainingOneComesBack() throws {
        let k = FakeIpvsKernel()
        let a = IpvsApplier(kernel: k)
        let svcKey = key("10.96.0.1", 80)
        try a.apply(desired([vs("10.96.0.1", 80, dests: ["10.0.0.1", "10.0.0.2"])], addresses: ["10.96.0.1"]))
        k.setConnections(svcKey, ip("10.0.0.2"), 8080, active: 1, inactive: 0)
        try a.apply(desired([vs("10.96.0.1", 80, dests: [])], addresses: ["10.96.0.1"]))
        XCTAssertEqual(k.log.suffix(2).map(\.description), ["-d -t 10.96.0.1:80 -r 10.0.0.1:8080", "-e -t 10.96.0.1:80 -r 10.0.0.2:8080 -m -w 0"])
        let plan = try a.apply(desired([vs("10.96.0.1", 80, dests: ["10.0.0.2"])], addresses: ["10.96.0.1"]))
        XCTAssertEqual(plan.changes.map(\.description), ["-e -t 10.96.0.1:80 -r 10.0.0.2:8080 -m -w 1"])
    }

    func testChangedServiceSettingsAreUpdatedInPlace() throws {
        let k = FakeIpvsKernel()
        let a = IpvsApplier(kernel: k)
        try a.apply(desired([vs("10.96.0.1", 80, dests: ["10.0.0.1"])], addresses: ["10.96.0.1"]))
        var sticky = vs("10.96.0.1", 80, dests: ["10.0.0.1"])
        sticky.flags = IpvsFlags.persistent
        sticky.timeout = 10800
        let plan = try a.apply(desired([sticky], addresses: ["10.96.0.1"]))
        XCTAssertEqual(plan.changes.map(\.description), ["-E -t 10.96.0.1:80 -s rr -p 10800"])
        XCTAssertEqual(k.services[sticky.key]?.destinations.count, 1, "real servers survive a SET_SERVICE")
        // The kernel reports IP_VS_SVC_F_HASHED: not a difference.
        var hashed = k.services[sticky.key]!
        hashed.flags |= IpvsFlags.hashed
        XCTAssertTrue(hashed.sameSettings(sticky))
    }

    func testOtherFamilyIsNotTouched() throws {
        let k = FakeIpvsKernel()
        k.install(interface: "kube-ipvs0", addresses: [ip("fd00::1")])
        k.install(vs("fd00::1", 80))
        let plan = try IpvsApplier(kernel: k).plan(desired([], addresses: []))
        XCTAssertTrue(plan.isEmpty)
    }

    func testKernelRefusalNamesTheObjectAndStops() throws {
        let k = FakeIpvsKernel()
        k.failWhen = { if case .addDestination = $0 { return 22 } else { return nil } }
        let a = IpvsApplier(kernel: k)
        XCTAssertThrowsError(try a.apply(desired([vs("10.96.0.1", 80, dests: ["10.0.0.1"])], addresses: ["10.96.0.1"]))) { e in
            let err = e as! IpvsApplyError
            XCTAssertEqual(err.change.object, "real server 10.0.0.1:8080 of virtual server TCP 10.96.0.1:80")
            XCTAssertEqual(err.applied, 2)
            XCTAssertTrue(err.description.contains("real server 10.0.0.1:8080 of virtual server TCP 10.96.0.1:80"))
        }
        XCTAssertEqual(k.log.count, 3, "nothing after the refused request")
    }

    func testCleanupRemovesOnlyServicesOnTheDummyInterfaceAndTheInterface() throws {
        let k = FakeIpvsKernel()
        k.install(interface: "kube-ipvs0", addresses: [ip("10.96.0.1")])
        k.install(vs("10.96.0.1", 80))
        k.install(vs("192.168.1.10", 30080))
        k.install(vs("172.16.0.1", 53, .udp))
        let changes = try IpvsApplier(kernel: k).cleanup(interface: "kube-ipvs0")
        XCTAssertEqual(changes.map(\.description), ["-D -t 10.96.0.1:80", "ip link del kube-ipvs0"])
        XCTAssertEqual(Set(k.services.keys), [key("192.168.1.10", 30080), key("172.16.0.1", 53, .udp)])
        XCTAssertTrue(try IpvsApplier(kernel: k).cleanup(interface: "kube-ipvs0").isEmpty)
    }

    func testCleanupAlsoRemovesTheRecordedNodePortVirtualServers() throws {
        let k = FakeIpvsKernel()
        k.install(interface: "kube-ipvs0", addresses: [ip("10.96.0.1")])
        k.install(vs("10.96.0.1", 80))
        k.install(vs("192.168.1.10", 30080))
        k.install(vs("192.168.1.10", 22))
        let changes = try IpvsApplier(kernel: k).cleanup(interface: "kube-ipvs0", alsoOwned: [key("192.168.1.10", 30080)])
        XCTAssertEqual(changes.map(\.description), ["-D -t 10.96.0.1:80", "-D -t 192.168.1.10:30080", "ip link del kube-ipvs0"])
        XCTAssertEqual(Set(k.services.keys), [key("192.168.1.10", 22)])
    }

    func testIpsetScriptAddsMissingAndDeletesStaleEntries() {
        let save = """
        create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1
        add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
        add KUBE-CLUSTER-IP 10.96.0.9,tcp:80
        create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
        add KUBE-LOAD-BALANCER-SOURCE-CIDR 1.2.3.4,tcp:80,10.0.0.5
        create OTHER hash:ip family inet
        add OTHER 1.1.1.1
        """
        let current = IpsetDiff.parseSave(save)
        XCTAssertEqual(current["OTHER"], ["1.1.1.1"])
        let desired = [
            Ipset(name: "KUBE-CLUSTER-IP", type: .hashIPPort, family: .ipv4, comment: "", entries: ["10.96.0.1,tcp:443", "10.96.0.2,tcp:53"]),
            Ipset(name: "KUBE-LOAD-BALANCER-SOURCE-CIDR", type: .hashIPPortNet, family: .ipv4, comment: "", entries: ["1.2.3.4,tcp:80,10.0.0.5/32"]),
            Ipset(name: "KUBE-IPVS-IPS", type: .hashIP, family: .ipv4, comment: "", entries: []),
        ]
        let s = IpsetDiff.script(desired: desired, current: current)
        XCTAssertEqual(s.createdSets, ["KUBE-IPVS-IPS"])
        XCTAssertEqual(s.added, 1)
        XCTAssertEqual(s.removed, 1)
        XCTAssertTrue(s.text.contains("add KUBE-CLUSTER-IP 10.96.0.2,tcp:53 -exist\n"))
        XCTAssertTrue(s.text.contains("del KUBE-CLUSTER-IP 10.96.0.9,tcp:80 -exist\n"))
        XCTAssertFalse(s.text.contains("OTHER"))
        XCTAssertTrue(IpsetDiff.script(desired: desired.map { var d = $0; d.entries = Array(current[d.name] ?? []).sorted(); return d },
                                       current: current.merging(["KUBE-IPVS-IPS": []]) { a, _ in a }).isEmpty)
    }
}
