// swift-tools-version: 6.1
import PackageDescription

// Release builds are compiled for the CPU they are built on (AVX2 and FMA on this project's
// machines): the hot loops' SIMD8 arithmetic then runs in whole 256-bit registers, with fused
// multiply-adds. Lockstep is built from source where it runs (scripts/setup); a binary built on
// one machine is for that kind of CPU only. (Unsafe flags also keep other packages from
// depending on this one: Lockstep is a tool, not a library to depend on, for now.)
let nativeCPU: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "native"], .when(configuration: .release))]

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
        .target(name: "Tensor", dependencies: ["CBLAS"], swiftSettings: nativeCPU),
        .target(name: "MediaIO", dependencies: ["CFFmpeg", "Tensor"], swiftSettings: nativeCPU),
        .target(name: "Lockstep", dependencies: ["Tensor", "MediaIO"], swiftSettings: nativeCPU),
        .executableTarget(
            name: "lockstep-cli",
            dependencies: ["Lockstep", "MediaIO", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: nativeCPU
        ),
        .target(name: "TestSupport", dependencies: ["Tensor", "MediaIO"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "TestSupport"]),
        .testTarget(name: "MediaIOTests", dependencies: ["MediaIO", "Tensor", "TestSupport"]),
        .testTarget(name: "LockstepTests", dependencies: ["Lockstep", "MediaIO", "Tensor", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["TestSupport", "MediaIO", "Tensor"]),
    ],
    swiftLanguageModes: [.v5]
)
