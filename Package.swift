// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Lockstep",
    products: [
        .executable(name: "lockstep", targets: ["lockstep-cli"]),
        .library(name: "Lockstep", targets: ["Lockstep"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CFFmpeg",
            pkgConfig: "libavformat libavcodec libswscale libavutil",
            providers: [.apt(["libavformat-dev", "libavcodec-dev", "libswscale-dev", "libavutil-dev"])]
        ),
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(name: "Tensor", dependencies: ["CBLAS"]),
        .target(name: "MediaIO", dependencies: ["CFFmpeg", "Tensor"]),
        .target(name: "Lockstep", dependencies: ["Tensor", "MediaIO"]),
        .executableTarget(
            name: "lockstep-cli",
            dependencies: ["Lockstep", "MediaIO", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .target(name: "TestSupport", dependencies: ["Tensor", "MediaIO"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "TestSupport"]),
        .testTarget(name: "MediaIOTests", dependencies: ["MediaIO", "Tensor", "TestSupport"]),
        .testTarget(name: "LockstepTests", dependencies: ["Lockstep", "MediaIO", "Tensor", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["TestSupport", "MediaIO", "Tensor"]),
    ],
    swiftLanguageModes: [.v5]
)
