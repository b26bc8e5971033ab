// swift-tools-version:6.2
//
// Larder: a feature store with a PostgreSQL-backed control plane and data-plane
// agents. See docs/architecture.md for what each target is and where it runs.
import PackageDescription

let package = Package(
    name: "larder",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "larder", targets: ["larder"]),
        .executable(name: "larder-control", targets: ["larder-control"]),
        .executable(name: "larder-agent", targets: ["larder-agent"]),
        .executable(name: "larder-bench", targets: ["larder-bench"]),
        .library(name: "Shared", targets: ["Shared"]),
        .library(name: "ControlPlane", targets: ["ControlPlane"]),
        .library(name: "DataPlane", targets: ["DataPlane"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.34.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Libraries: all logic lives here, so tests exercise what the binaries run.
        // The git revision a release build stamps in (a C define: see LarderBuildInfo.c).
        .target(name: "LarderBuildInfo"),
        .target(
            name: "Shared",
            dependencies: [
                "LarderBuildInfo",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                // HTTPConnectionGuard: limits on both servers' connections.
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "ControlPlane",
            dependencies: [
                "Shared",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                // Password hashing runs on NIO's blocking thread pool (PasswordWork).
                .product(name: "NIOPosix", package: "swift-nio"),
                // The HTTP/1 pipeline with the connection guard (ControlPlaneHTTP1Channel).
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            ],
            resources: [
                .embedInCode("API/openapi.yaml"),
                .embedInCode("Database/Migrations/0001_registry.sql"),
                .embedInCode("Database/Migrations/0002_access.sql"),
                .embedInCode("Database/Migrations/0003_plan_writes.sql"),
                .embedInCode("Database/Migrations/0004_signing_key.sql"),
                .embedInCode("Database/Migrations/0005_jobs.sql"),
                .embedInCode("Database/Migrations/0006_access_version.sql"),
                .embedInCode("Database/Migrations/0007_dataset_jobs.sql"),
                .embedInCode("Database/Migrations/0008_alerts.sql"),
                .embedInCode("Database/Migrations/0009_alert_deliveries.sql"),
                .embedInCode("Database/Migrations/0010_enrollment.sql"),
                .embedInCode("Database/Migrations/0011_token_audience.sql"),
                .embedInCode("Database/Migrations/0012_lease_terms.sql"),
                .embedInCode("Database/Migrations/0013_signing_key_rotation.sql"),
                .embedInCode("Database/Migrations/0014_metrics_audience.sql"),
                .embedInCode("Database/Migrations/0015_sessions.sql"),
                .embedInCode("Database/Migrations/0016_audit_partitions.sql"),
                .embedInCode("Database/Migrations/0017_environments.sql"),
                .embedInCode("Database/Migrations/0018_recompute.sql"),
            ]
        ),
        .target(
            name: "DataPlane",
            dependencies: [
                "Shared",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                // The feature read is answered on the event loop (OnlineFeaturesChannelHandler).
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
                // The Redis online store's connections (RedisConnection), over TLS too.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),

        // Thin executables: read configuration, compose the libraries, run.
        .executableTarget(
            name: "larder",
            dependencies: [
                "Shared",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .executableTarget(
            name: "larder-control",
            dependencies: [
                "ControlPlane",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "larder-agent",
            dependencies: [
                "DataPlane",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // An agent whose executor only simulates work, for protocol tests with real processes.
        .executableTarget(
            name: "larder-test-agent",
            dependencies: [
                "DataPlane",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestAgent"
        ),

        // Benchmarks (release build, through scripts/bench).
        .target(name: "LoadGeneratorSystem", path: "Benchmarks/LoadGeneratorSystem"),
        .executableTarget(
            name: "larder-bench",
            dependencies: [
                "ControlPlane", "DataPlane", "Shared", "TestSupport", "LoadGeneratorSystem",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Benchmarks/larder-bench"
        ),

        // Test tooling shared by the integration suites (real PostgreSQL).
        .target(
            name: "TestSupport",
            dependencies: [
                "Shared",
                "ControlPlane",
                "DataPlane",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
            ],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "SharedTests",
            dependencies: ["Shared", "TestSupport"]
        ),
        .testTarget(
            name: "DataPlaneTests",
            dependencies: ["DataPlane", "Shared", "TestSupport"]
        ),
        .testTarget(
            name: "ControlPlaneTests",
            dependencies: ["ControlPlane", "Shared", "TestSupport", .product(name: "Yams", package: "Yams")]
        ),
        .testTarget(
            name: "CLITests",
            dependencies: [
                "larder", "larder-control", "larder-agent", "larder-test-agent", "TestSupport", "DataPlane",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "TestSupport",
                "DataPlane",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Crypto", package: "swift-crypto"),
                "ControlPlane",
                "Shared",
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
    ]
)
