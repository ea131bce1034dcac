// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "kuberules",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "kuberules", targets: ["kuberules"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
    ],
    targets: [
        // Kubernetes objects, manifest loading, validation, KubeProxyConfiguration.
        .target(name: "KubeModel", dependencies: ["Parallel", .product(name: "Yams", package: "Yams")]),
        // The backend-neutral plan: every Kubernetes rule of behaviour lives here, once.
        .target(name: "KubePlan", dependencies: ["KubeModel", "Parallel", .product(name: "Crypto", package: "swift-crypto")]),
        // kube-proxy-exact iptables layout (pure).
        .target(name: "IptablesBackend", dependencies: ["KubePlan", "Parallel"]),
        // iptables apply: iptables-save / iptables-restore --noflush, partial syncs (no C).
        .target(name: "IptablesApply", dependencies: ["IptablesBackend", .product(name: "Crypto", package: "swift-crypto")]),
        // nftables value model (tables, chains, sets, maps, rules as netlink-shaped expressions) + text.
        // Order-preserving data parallelism for the pure compiler (Dispatch only).
        .target(name: "Parallel"),
        .target(name: "NftModel", dependencies: ["Parallel"]),
        // plan -> NftRuleset (pure).
        .target(name: "NftBackend", dependencies: ["KubePlan", "NftModel", "Parallel"]),
        // Kernel protocol, in-memory fake, diff and apply logic (pure Swift, no C).
        .target(name: "NftApply", dependencies: ["NftModel", "Parallel"]),
        // IPVS values: virtual servers, real servers, ipsets, and their ipvsadm / ipset text.
        .target(name: "IpvsModel", dependencies: ["KubeModel", "Parallel"]),
        // plan -> IpvsConfig (pure): kube-proxy's IPVS mode (virtual servers, dummy addresses, ipsets, iptables).
        .target(name: "IpvsBackend", dependencies: ["KubePlan", "IptablesBackend", "IpvsModel", "Parallel"]),
        // IPVS kernel protocol, in-memory fake, diff and ordered apply (pure Swift, no C).
        .target(name: "IpvsApply", dependencies: ["IpvsModel", "KubeModel"]),
        // The C boundary: libmnl + libnftnl.
        .systemLibrary(name: "CNetfilter", pkgConfig: "libnftnl",
                       providers: [.apt(["libnftnl-dev", "libmnl-dev"])]),
        // The only Swift target that sees C types: nftables (libnftnl), IPVS genetlink and rtnetlink (libmnl).
        .target(name: "Netlink", dependencies: ["CNetfilter", "NftModel", "NftApply", "IpvsModel", "IpvsApply", "KubeModel", "Parallel"]),
        .executableTarget(name: "kuberules", dependencies: [
            "KubeModel", "KubePlan", "IptablesBackend", "IptablesApply", "NftModel", "NftBackend", "NftApply", "Netlink",
            "IpvsModel", "IpvsBackend", "IpvsApply", "Parallel",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "ParallelTests", dependencies: ["Parallel"]),
        .testTarget(name: "KubeModelTests", dependencies: ["KubeModel", "Parallel"]),
        .testTarget(name: "KubePlanTests", dependencies: ["KubePlan"]),
        .testTarget(name: "IptablesBackendTests", dependencies: ["IptablesBackend", "IptablesApply", "KubePlan", "KubeModel"],
                    exclude: ["datapath"]),
        .testTarget(name: "NftTests", dependencies: ["NftModel", "NftApply", "NftBackend", "KubePlan", "KubeModel"]),
        .testTarget(name: "IpvsTests", dependencies: ["IpvsModel", "IpvsBackend", "IpvsApply", "IptablesBackend", "KubePlan", "KubeModel"]),
        .testTarget(name: "KernelTests", dependencies: ["NftModel", "NftApply", "Netlink", "IpvsModel", "IpvsApply", "KubeModel", "Parallel"]),
    ],
    swiftLanguageModes: [.v6]
)
