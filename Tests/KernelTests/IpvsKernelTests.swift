// Real-kernel tests of the IPVS netlink code, inside a private network namespace only (see
// KernelTests.swift). Where the kernel has no IPVS (or no dummy module), the IPVS tests check
// the clean "not available" failure; in the IPVS VM (make test-ipvs) they program the kernel.

import XCTest
import Foundation
import IpvsApply
import IpvsModel
import KubeModel
import Netlink

final class IpvsNetlinkTests: XCTestCase {
    /// Addresses via rtnetlink on `lo` (always present): add, list, delete, errors name the object.
    func testAddressesOnAnInterface() throws {
        try requirePrivateNamespace()
        let links = try RtnetlinkLinks()
        let v4 = IPAddress("10.99.0.1")!, v6 = IPAddress("fd00:99::1")!
        XCTAssertNil(try links.addresses(on: "kr-none0"))
        try links.addAddress(v4, on: "lo")
        try links.addAddress(v6, on: "lo")
        let have = try XCTUnwrap(links.addresses(on: "lo"))
        XCTAssertTrue(have.contains(v4) && have.contains(v6), "\(have)")
        XCTAssertThrowsError(try links.addAddress(v4, on: "lo")) { e in
            XCTAssertTrue("\(e)".contains("address 10.99.0.1/32 on lo"), "\(e)")
        }
        try links.deleteAddress(v4, on: "lo")
        try links.deleteAddress(v6, on: "lo")
        XCTAssertFalse(try XCTUnwrap(links.addresses(on: "lo")).contains(v4))
        XCTAssertThrowsError(try links.deleteDummy("lo"), "lo is not a dummy interface and must be left alone")
    }

    /// A dummy interface is created and deleted (skipped where the kernel has no dummy driver).
    func testDummyInterface() throws {
        try requirePrivateNamespace()
        let links = try RtnetlinkLinks()
        do {
            try links.createDummy("kube-ipvs0")
        } catch IpvsKernelError.refused(_, let e, _) where e == EOPNOTSUPP {
            throw XCTSkip("this kernel has no dummy interface driver")
        }
        XCTAssertEqual(try links.addresses(on: "kube-ipvs0"), [])
        try links.addAddress(IPAddress("10.96.0.1")!, on: "kube-ipvs0")
        XCTAssertEqual(try links.addresses(on: "kube-ipvs0"), [IPAddress("10.96.0.1")!])
        try links.deleteDummy("kube-ipvs0")
        XCTAssertNil(try links.addresses(on: "kube-ipvs0"))
    }

    /// Without IPVS: a clean `.unavailable`. With IPVS: apply, read back, drain, clean up.
    func testIpvsApplyReadBackAndCleanup() throws {
        try requirePrivateNamespace()
        let kernel: IpvsNetlink
        do {
            kernel = try IpvsNetlink()
        } catch IpvsKernelError.unavailable {
            XCTAssertTrue("\(IpvsKernelError.unavailable)".hasPrefix("IPVS is not available in this kernel"))
            throw XCTSkip("this kernel has no IPVS")
        }
        let key = IpvsServiceKey(proto: .tcp, address: IPAddress("10.96.0.10")!, port: 80)
        let key6 = IpvsServiceKey(proto: .udp, address: IPAddress("fd00::10")!, port: 53)
        var sticky = IpvsVirtualServer(key: key, scheduler: "rr", flags: IpvsFlags.persistent, timeout: 10800,
                                       destinations: [IpvsRealServer(address: IPAddress("10.244.0.2")!, port: 8080),
                                                      IpvsRealServer(address: IPAddress("10.244.0.3")!, port: 8080)])
        let v6 = IpvsVirtualServer(key: key6, scheduler: "rr",
                                   destinations: [IpvsRealServer(address: IPAddress("fd00:1::2")!, port: 5353)])
        let desired = IpvsDesiredState(interface: "kube-ipvs0", families: [.ipv4, .ipv6], services: [sticky, v6],
                                       addresses: [key.address, key6.address], nodeAddresses: [])
        let applier = IpvsApplier(kernel: kernel)
        do { try applier.apply(desired) } catch let e as IpvsApplyError where e.change == .createInterface("kube-ipvs0") {
            throw XCTSkip("this kernel has no dummy interface driver: \(e)")
        }
        let state = try kernel.read(interface: "kube-ipvs0")
        XCTAssertTrue(state.interfaceExists)
        XCTAssertEqual(Set(state.addresses), [key.address, key6.address])
        let got = try XCTUnwrap(state.services.first { $0.key == key })
        XCTAssertTrue(got.sameSettings(sticky), "\(got)")
        XCTAssertEqual(got.destinations.map(\.hostPort), ["10.244.0.2:8080", "10.244.0.3:8080"])
        XCTAssertEqual(got.destinations.map(\.weight), [1, 1])
        XCTAssertEqual(state.services.first { $0.key == key6 }?.netmask, 128)
        XCTAssertTrue(try applier.plan(desired).isEmpty, "second apply is a no-op")

        sticky.destinations.removeLast()
        let fewer = IpvsDesiredState(interface: "kube-ipvs0", families: [.ipv4, .ipv6], services: [sticky],
                                     addresses: [key.address], nodeAddresses: [])
        let plan = try applier.apply(fewer)
        XCTAssertEqual(plan.changes.map(\.description), [
            "-d -t 10.96.0.10:80 -r 10.244.0.3:8080",       // no connections: deleted at once
            "-D -u [fd00::10]:53",
            "ip addr del fd00::10/128 dev kube-ipvs0",
        ])
        XCTAssertTrue(try applier.plan(fewer).isEmpty)
        let removed = try applier.cleanup(interface: "kube-ipvs0")
        XCTAssertEqual(removed.map(\.description), ["-D -t 10.96.0.10:80", "ip link del kube-ipvs0"])
        XCTAssertTrue(try kernel.read(interface: "kube-ipvs0").services.isEmpty)
    }
}
