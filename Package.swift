// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ivserver",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "ivserver", targets: ["Main"]),
        .library(name: "IVServer", targets: ["IVServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // libuv plus the few Linux declarations Swift cannot import by itself
        // (CMSG_* macros, struct ucred, eventfd, accept4); see shim.h.
        .systemLibrary(
            name: "CLibUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        .target(
            name: "IVServer",
            dependencies: [
                "CLibUV",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "Main",
            dependencies: [
                "IVServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "IVServerTests",
            dependencies: ["IVServer", "CLibUV"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
