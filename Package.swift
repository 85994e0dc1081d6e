// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ivserver",
    products: [
        .executable(name: "ivserver", targets: ["Main"]),
        .executable(name: "ivctl", targets: ["IVCtl"]),
        .library(name: "IVClient", targets: ["IVClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // libuv, and only libuv: the server's event loop.
        .systemLibrary(
            name: "CLibUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        // The Linux declarations Swift cannot import by itself (CMSG_*
        // macros, struct ucred, eventfd, accept4, futex, atomics on shared
        // words), for the server and the client library alike.
        .target(name: "CLinux"),
        // The system layer server and clients share: sockets and SCM_RIGHTS,
        // eventfds, file reads, one retry helper, one errno-carrying error,
        // and the seam where a test makes a call fail.
        .target(name: "LinuxSystem", dependencies: ["CLinux"]),
        // The event loop: libuv's loop and handles, and the one readiness set
        // every socket of a server is watched through. The only importer of
        // CLibUV.
        .target(name: "EventLoop", dependencies: ["CLibUV", "CLinux", "LinuxSystem"]),
        // The byte formats servers and clients share, pure (no I/O): the
        // vSoC layout header, the HALD handshake (constants and the server's
        // state machine), QEMU's ivshmem messages for the vSoC mode, and the
        // multi-peer protocol's messages and constants.
        .target(name: "WireFormat"),
        // What both servers are made of: listening, admission and refusal
        // (the access policy, pending shares, waiting connections), the
        // event log and operator text, and one service shape (signals,
        // READY/STATUS, the state dump, going to the background).
        .target(name: "ServerCore", dependencies: ["EventLoop", "LinuxSystem", "WireFormat"]),
        .target(
            name: "IVServer",
            dependencies: [
                "EventLoop",
                "LinuxSystem",
                "ServerCore",
                "WireFormat",
            ]
        ),
        // QEMU's multi-peer ivshmem server (`ivserver multi-peer`, and the
        // binary run as `ivshmem-server`).
        .target(name: "MultiPeer", dependencies: ["EventLoop", "LinuxSystem", "ServerCore", "WireFormat"]),
        .executableTarget(
            name: "Main",
            dependencies: [
                "IVServer",
                "MultiPeer",
                "ServerCore",
                "LinuxSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The host-side SDK: a region's fds, mapping and signalling.
        .target(
            name: "IVClient",
            dependencies: ["LinuxSystem", "WireFormat"]
        ),
        .executableTarget(
            name: "IVCtl",
            dependencies: [
                "IVClient",
                "LinuxSystem",
                "WireFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "IVServerTests",
            dependencies: ["IVServer", "IVClient", "CLinux", "EventLoop", "LinuxSystem", "MultiPeer", "ServerCore", "WireFormat", "Main"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
