import AsyncHTTPClient
import ControlPlane
import Foundation
import NIOHTTP1
import Shared
import Testing
import TestSupport

/// What the fuzzer (scripts/fuzz-api) found, each kept as a case: control
/// characters, filters, methods, media types, and fields the API does not declare.
@Suite("The API's edge: what every request must be")
struct APIEdgeTests {
    @Test("NUL and other control characters in a body, a path or a query are refused with 400 (not 500), login included; tab and line feed in bodies pass")
    func controlCharacters() async throws {
        try await TestControlPlane.withControlPlane { server in
            let base = server.baseURL, token = server.adminToken
            let json = ["Content-Type": "application/json"]
            for (method, path, body, field) in [
                (HTTPMethod.POST, "/v1/workspaces", #"{"name":"ok","description":"a\u0000b"}"#, "description"),
                (.POST, "/v1/login", #"{"name":"ada\u0000","password":"whatever it is"}"#, "name"),
                (.POST, "/v1/principals", #"{"name":"bob","kind":"user","description":"\u001b[31m"}"#, "description"),
                (.POST, "/v1/workspaces", #"{"name":"ok","description":"form\ffeed"}"#, "description"),
            ] {
                let answer = try await RawResponse.send(method, base + path, body: body, headers: json, token: path == "/v1/login" ? nil : token)
                #expect(answer.status == 400 && answer.problem?.field == field, "\(path): \(answer.status) \(String(describing: answer.problem?.field))")
            }
            for path in ["/v1/workspaces/a%00b", "/v1/principals/x%00", "/v1/audit?principal=a%00", "/v1/workspaces/a/jobs?state=%07"] {
                let answer = try await RawResponse.send(.GET, base + path, token: token)
                #expect(answer.status == 400 && answer.headers["content-type"] == "application/problem+json", "\(path): \(answer.status)")
            }
            let multiline = try await RawResponse.send(
                .POST, base + "/v1/workspaces", body: #"{"name":"ok","description":"line one\nline\ttwo"}"#, headers: json, token: token)
            #expect(multiline.status == 201)
        }
    }

    @Test("filters are validated: an unknown enum value, a bad date or an empty filter is 400 naming it; undeclared fields are 400 too")
    func filtersAndFields() async throws {
        try await TestControlPlane.withControlPlane { server in
            let base = server.baseURL, token = server.adminToken
            _ = try await server.client.createWorkspace("edge")
            for (path, field) in [
                ("/v1/audit?outcome=bogus", "outcome"), ("/v1/audit?since=yesterday", "since"), ("/v1/alerts?state=", "state"),
                ("/v1/audit?since=", "since"), ("/v1/workspaces/edge/jobs?kind=nope", "kind"), ("/v1/workspaces/edge/search?q=x&kind=Nope", "kind"),
                ("/v1/workspaces/edge/jobs/99999999999999999999999", "job"),
            ] {
                let answer = try await RawResponse.send(.GET, base + path, token: token)
                #expect(answer.status == 400 && answer.problem?.field == field, "\(path): \(answer.status) \(String(describing: answer.problem?.field))")
            }
            let unknown = try await RawResponse.send(
                .POST, base + "/v1/workspaces", body: #"{"name":"other","colour":"blue"}"#, headers: ["Content-Type": "application/json"], token: token)
            #expect(unknown.status == 400 && unknown.problem?.field == "colour")
            // An admin asking for the access of a workspace that does not exist: 404, not an empty list.
            #expect(try await RawResponse.send(.GET, base + "/v1/workspaces/nowhere/access", token: token).status == 404)
        }
    }

    @Test("a known path asked with another method is 405 with Allow (the router's choice of route); a body that is not JSON is 415")
    func methodsAndMediaTypes() async throws {
        try await TestControlPlane.withControlPlane { server in
            let base = server.baseURL, token = server.adminToken
            let trace = try await RawResponse.send(.TRACE, base + "/healthz")
            #expect(trace.status == 405 && trace.headers["allow"] == "GET")
            let patch = try await RawResponse.send(.PATCH, base + "/v1/workspaces", token: token)
            #expect(patch.status == 405 && patch.headers["allow"] == "GET, POST")
            // The literal route wins over the generic collection route, as in the router.
            let options = try await RawResponse.send(.OPTIONS, base + "/v1/workspaces/a/datasets", token: token)
            #expect(options.status == 405 && options.headers["allow"] == "POST", "\(options.headers["allow"] ?? "none")")
            #expect(try await RawResponse.send(.GET, base + "/v1/nothing-here", token: token).status == 404)
            let form = try await RawResponse.send(
                .POST, base + "/v1/workspaces", body: "name=x", headers: ["Content-Type": "application/x-www-form-urlencoded"], token: token)
            #expect(form.status == 415 && form.problem?.code == "unsupported-media-type")
            let none = try await RawResponse.send(.POST, base + "/v1/workspaces", body: #"{"name":"x"}"#, headers: ["Content-Type": ""], token: token)
            #expect(none.status == 415)
        }
    }

    @Test("the served document declares the common answers, no-control-character patterns, strict request bodies and non-empty filters")
    func documentDeclaresTheRules() throws {
        let document = try #require(try JSONSerialization.jsonObject(with: OpenAPIDocument.json) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: Any])
        let login = try #require((paths["/v1/login"] as? [String: Any])?["post"] as? [String: Any])
        let responses = try #require(login["responses"] as? [String: Any])
        for status in ["400", "401", "413", "415", "429"] { #expect(responses[status] != nil, "login: \(status)") }
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
        let create = try #require(schemas["CreateWorkspaceRequest"] as? [String: Any])
        #expect(create["additionalProperties"] as? Bool == false)
        let description = try #require((create["properties"] as? [String: Any])?["description"] as? [String: Any])
        #expect(description["type"] as? [String] == ["string", "null"])
        #expect((description["pattern"] as? String)?.contains("u0000") == true)
    }
}
