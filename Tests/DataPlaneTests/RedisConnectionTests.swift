import DataPlane
import Foundation
import NIOCore
import NIOEmbedded
import NIOSSL
import Testing
import TestSupport

@Suite("Redis connections (RESP2 against a real redis-server)")
struct RedisConnectionTests {
    @Test("commands and their answers: strings, binary bytes, integers, nulls, arrays, errors; a thousand pipelined commands answered in order")
    func commands() async throws {
        try await TestRedis.withServer { port in
            let redis = try await RedisConnection.connect(host: "127.0.0.1", port: port)
            #expect(try await redis.send(["PING"]) == .simpleString("PONG"))
            #expect(try await redis.send(["SET", "k", "value"]) == .simpleString("OK"))
            #expect(try await redis.send(["GET", "k"]).string == "value")
            #expect(try await redis.send(["GET", "missing"]).isNull)
            var bytes = ByteBuffer()
            bytes.writeBytes([0, 13, 10, 255, 42, 0])   // NUL, CR, LF inside a value: bulk strings carry any bytes
            try await redis.send(["SET", "binary", .bytes(bytes)])
            #expect(try await redis.send(["GET", "binary"]) == .bulkString(bytes))
            #expect(try await redis.send(["INCRBY", "n", "41"]) == .integer(41))
            #expect(try await redis.send(["MGET", "k", "missing", "n"]) == .array([.bulkString(ByteBuffer(string: "value")), .bulkString(nil), .bulkString(ByteBuffer(string: "41"))]))
            await #expect { try await redis.send(["NOSUCHCOMMAND"]) } throws: { ($0 as? RedisError).map { if case .server(let message) = $0 { message.hasPrefix("ERR") } else { false } } ?? false }
            // Pipelined: one write, answers matched in order; an error answer stays in its place.
            let commands: [[RESPArgument]] = (0..<1_000).map { index in index == 500 ? ["INCR", "k"] : ["SET", .text("key\(index)"), .text("\(index)")] }
            let answers = try await redis.pipeline(commands)
            #expect(answers.count == 1_000 && answers[499] == .simpleString("OK") && answers[501] == .simpleString("OK"))
            if case .error(let message) = answers[500] { #expect(message.contains("not an integer")) } else { Issue.record("\(answers[500])") }
            let read = try await redis.pipeline((0..<1_000).map { ["GET", .text("key\($0)")] })
            #expect(read.enumerated().allSatisfy { index, value in index == 500 ? value.isNull : value.string == "\(index)" })
            // Many callers at once on one connection.
            let values = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for index in 0..<200 { group.addTask { (index, try await redis.send(["GET", .text("key\(index)")]).string) } }
                return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
            }
            #expect((0..<200).allSatisfy { values[$0] == "\($0)" })
            try await redis.close()
        }
    }

    @Test("authentication: an ACL user with the right password works, a wrong one is refused; a call past its timeout fails and closes the connection")
    func authenticationAndTimeout() async throws {
        try await TestRedis.withServer(arguments: ["--user", "default", "off", "--user", "larder", "on", ">a long secret", "~*", "&*", "+@all"]) { port in
            let redis = try await RedisConnection.connect(host: "127.0.0.1", port: port, user: "larder", password: "a long secret")
            #expect(try await redis.send(["PING"]) == .simpleString("PONG"))
            await #expect { _ = try await RedisConnection.connect(host: "127.0.0.1", port: port, user: "larder", password: "wrong") } throws: {
                ($0 as? RedisError).map { if case .server(let message) = $0 { message.hasPrefix("WRONGPASS") } else { false } } ?? false
            }
            // Without authentication the default user is off: every command is refused.
            let anonymous = try await RedisConnection.connect(host: "127.0.0.1", port: port)
            await #expect(throws: RedisError.self) { try await anonymous.send(["GET", "k"]) }
            try await anonymous.close()
            // A server that does not answer (a blocking pop for longer than the call's timeout): timed out, connection closed.
            // (Its connect has the same 300 ms: on a loaded machine it may need another try.)
            var connected: RedisConnection?
            for _ in 0..<20 where connected == nil {
                connected = try? await RedisConnection.connect(host: "127.0.0.1", port: port, user: "larder", password: "a long secret", timeout: .milliseconds(300))
            }
            let slow = try #require(connected)
            await #expect { try await slow.send(["BLPOP", "nothing", "5"]) } throws: { ($0 as? RedisError) == .timedOut }
            await #expect { try await slow.send(["PING"]) } throws: { ($0 as? RedisError) == .closed }
            try await redis.close()
        }
    }

    @Test("TLS: with the server's CA trusted, commands work over TLS; a client trusting another CA is refused at the handshake")
    func tls() async throws {
        let certificates = try await ThrowawayCertificates()
        defer { try? FileManager.default.removeItem(at: certificates.folder) }
        let tlsPort = try TestRedis.freePort()
        try await TestRedis.withServer(arguments: [
            "--tls-port", "\(tlsPort)", "--tls-cert-file", certificates.serverCertificate, "--tls-key-file", certificates.serverKey,
            "--tls-ca-cert-file", certificates.caCertificate, "--tls-auth-clients", "no",
        ]) { _ in
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(certificates.caCertificate)
            var secure: RedisConnection?
            let deadline = Date().addingTimeInterval(5)
            while secure == nil, Date() < deadline {
                secure = try? await RedisConnection.connect(host: "127.0.0.1", port: tlsPort, tls: tls)
                if secure == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let redis = try #require(secure)
            #expect(try await redis.send(["SET", "k", "over tls"]) == .simpleString("OK"))
            #expect(try await redis.send(["GET", "k"]).string == "over tls")
            try await redis.close()
            // Trusting only another CA: the handshake fails, nothing is sent.
            let other = try await ThrowawayCertificates()
            defer { try? FileManager.default.removeItem(at: other.folder) }
            var wrong = TLSConfiguration.makeClientConfiguration()
            wrong.trustRoots = .file(other.caCertificate)
            await #expect(throws: (any Error).self) {
                let connection = try await RedisConnection.connect(host: "127.0.0.1", port: tlsPort, tls: wrong)
                defer { Task { try? await connection.close() } }
                _ = try await connection.send(["PING"])
            }
        }
    }

    @Test("the decoder: any value cut anywhere is read whole once the rest arrives; malformed streams are refused")
    func decoderInPieces() throws {
        var random = SeededGenerator(seed: 27)
        for _ in 0..<200 {
            var stream = ByteBuffer()
            stream.writeString("+OK\r\n:-42\r\n$5\r\nhe\r\nl\r\n$-1\r\n*3\r\n$1\r\na\r\n*-1\r\n*2\r\n:1\r\n-ERR x\r\n$0\r\n\r\n")
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder()))
            var rest = stream
            while rest.readableBytes > 0 {
                let cut = Int.random(in: 1...max(1, rest.readableBytes), using: &random)
                try channel.writeInbound(rest.readSlice(length: cut)!)
            }
            var values: [RESPValue] = []
            while let value = try channel.readInbound(as: RESPValue.self) { values.append(value) }
            #expect(values == [
                .simpleString("OK"), .integer(-42), .bulkString(ByteBuffer(string: "he\r\nl")), .bulkString(nil),
                .array([.bulkString(ByteBuffer(string: "a")), .array(nil), .array([.integer(1), .error("ERR x")])]), .bulkString(ByteBuffer()),
            ])
            _ = try channel.finish()
        }
        for bad in ["?what\r\n", ":12x\r\n", "$-5\r\n", "$3\r\nabcXY"] {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder()))
            #expect(throws: (any Error).self, "\(bad)") { try channel.writeInbound(ByteBuffer(string: bad)) }
            _ = try? channel.finish()
        }
    }
}
