import Foundation
import HostnatProto
import HostnatTrace
import SwiftProtobuf
import Testing

/// A small recorded exchange as an agent would write it: hello, a push, its ACK, heartbeats,
/// a push that was NACKed, a port request and its grant.
func agentExchange(path: String) throws -> ControlTrace {
  let clock = ManualMs(start: 1_790_000_000_000)
  let trace = try ControlTrace(path: path, side: "agent", selfName: "host-a", clock: { clock.tick() })
  let stream = trace.nextStream()
  let peer = "127.0.0.1:7400"
  trace.record(.sent, peer: peer, stream: stream, Hostnat_V1_AgentMessage.with {
    $0.hello = .with { $0.hostID = "host-a"; $0.bootID = "0123456789abcdef"; $0.appliedVersion = 0; $0.underlayAddress = "127.0.0.1:9001" }
  })
  trace.record(.received, peer: peer, stream: stream, Hostnat_V1_ControllerMessage.with {
    $0.push = .with {
      $0.nonce = "v7-1"
      $0.config = .with {
        $0.hostID = "host-a"
        $0.version = 7
        $0.vms = [.with {
          $0.instance = "vm-1"
          $0.nics = [.with {
            $0.name = "nic0"
            $0.natBindings = [.with { $0.gateway = "g"; $0.portBlocks = [.with { $0.natIp = "203.0.113.10"; $0.firstPort = 1024; $0.count = 1024 }] }]
          }]
        }]
      }
    }
  })
  trace.record(.sent, peer: peer, stream: stream, Hostnat_V1_AgentMessage.with { $0.ack = .with { $0.nonce = "v7-1"; $0.version = 7 } })
  for _ in 0..<3 {
    trace.record(.received, peer: peer, stream: stream, Hostnat_V1_ControllerMessage.with { $0.heartbeat.sentMs = 1 })
    trace.record(.sent, peer: peer, stream: stream, Hostnat_V1_AgentMessage.with { $0.heartbeat.sentMs = 1 })
  }
  trace.record(.received, peer: peer, stream: stream, Hostnat_V1_ControllerMessage.with {
    $0.push = .with { $0.nonce = "v8-2"; $0.config = .with { $0.hostID = "host-a"; $0.version = 8 } }
  })
  trace.record(.sent, peer: peer, stream: stream, Hostnat_V1_AgentMessage.with {
    $0.nack = .with { $0.nonce = "v8-2"; $0.version = 8; $0.appliedVersion = 7; $0.error = "vms[0]: bad" }
  })
  trace.record(.sent, peer: peer, stream: stream, Hostnat_V1_AgentMessage.with {
    $0.portRequest = .with { $0.requestID = "r1"; $0.instance = "vm-1"; $0.nic = "nic0"; $0.portsAllocated = 1024 }
  })
  trace.record(.received, peer: peer, stream: stream, Hostnat_V1_ControllerMessage.with {
    $0.portGrant = .with { $0.requestID = "r1"; $0.version = 9; $0.block = .with { $0.natIp = "203.0.113.10"; $0.firstPort = 2048; $0.count = 1024 } }
  })
  return trace
}

final class ManualMs: Sendable {
  let value: Mutex<Int64>
  init(start: Int64) { value = Mutex(start) }
  func tick() -> Int64 { value.withLock { $0 += 250; return $0 } }
}

import Synchronization

func temporaryFile(_ name: String) -> String {
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hostnat-trace-\(getpid())-\(UUID().uuidString.prefix(8))")
  try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
  return dir.appendingPathComponent(name).path
}

@Suite("Control trace files")
struct TraceFileTests {
  @Test("every record survives the file: fields, message type and protobuf content")
  func roundTrip() throws {
    let path = temporaryFile("agent.jsonl")
    let trace = try agentExchange(path: path)
    #expect(trace.counts.written == 13)
    #expect(trace.counts.failed == 0)
    let records = try TraceCodec.read(path: path)
    #expect(records.count == 13)
    let heartbeats: [String] = Array(repeating: "heartbeat", count: 6)
    let expected: [String] = ["hello", "push", "ack"] + heartbeats + ["push", "nack", "portRequest", "portGrant"]
    #expect(records.map(\.type) == expected)
    #expect(records.allSatisfy { $0.side == "agent" && $0.selfName == "host-a" && $0.stream == 1 && $0.peer == "127.0.0.1:7400" })
    #expect(records[0].direction == .sent && records[1].direction == .received)
    #expect(records[0].proto == "hostnat.v1.AgentMessage" && records[1].proto == "hostnat.v1.ControllerMessage")
    #expect(records[1].ms - records[0].ms == 250)
    guard case .controller(let push) = try TracedMessage(records[1]) else {
      Issue.record("record 1 is not a controller message")
      return
    }
    #expect(push.push.config.vms.first?.nics.first?.natBindings.first?.portBlocks.first?.firstPort == 1024)
    // A line is JSON on its own, with the message in protobuf's JSON names.
    let text = try String(contentsOfFile: path, encoding: .utf8)
    let first = try #require(text.split(separator: "\n").first)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])
    #expect((object["message"] as? [String: Any])?["hello"] != nil)
    #expect((object["time"] as? String)?.hasSuffix("Z") == true)
  }

  @Test("a line that is not a record is an error naming the file, the line and the field", arguments: [
    ("not json", "not JSON"),
    ("[1,2]", "not a JSON object"),
    (#"{"ms":1,"side":"agent","self":"a","direction":"sideways","peer":"p","stream":1,"proto":"x","type":"t","message":{}}"#, "\"direction\""),
    (#"{"ms":1,"side":"agent","self":"a","direction":"sent","peer":"p","stream":1,"proto":"x","type":"t"}"#, "\"message\""),
    (#"{"side":"agent","self":"a","direction":"sent","peer":"p","stream":1,"proto":"x","type":"t","message":{}}"#, "\"ms\""),
  ])
  func malformed(line: String, reason: String) throws {
    let path = temporaryFile("bad.jsonl")
    let good = #"{"ms":1,"time":"x","side":"agent","self":"a","direction":"sent","peer":"p","stream":1,"proto":"hostnat.v1.AgentMessage","type":"heartbeat","message":{"heartbeat":{}}}"#
    try (good + "\n" + line + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    #expect {
      _ = try TraceCodec.read(path: path)
    } throws: { error in
      "\(error)".contains(":2: ") && "\(error)".contains(reason)
    }
  }

  @Test("a message of a type that is not a control message is reported, not guessed")
  func unknownProto() throws {
    let record = TraceRecord(ms: 1, side: "agent", selfName: "a", direction: .sent, peer: "p", stream: 1, proto: "hostnat.v1.Network", type: "x", json: "{}")
    #expect(throws: TraceError.self) { _ = try TracedMessage(record) }
    #expect(TraceShow.summary(record).contains("undecodable"))
  }
}

@Suite("trace show")
struct TraceShowTests {
  @Test("the text form reads host on the left, counts heartbeats and summarises each message")
  func text() throws {
    let path = temporaryFile("agent.jsonl")
    _ = try agentExchange(path: path)
    let out = TraceShow.render(try TraceCodec.read(path: path))
    let lines = out.split(separator: "\n").map(String.init)
    #expect(lines[0].hasPrefix("control trace written by agent host-a: 13 message(s), 1 stream(s), 1 host(s), 3.000 s"))
    #expect(lines.contains { $0.contains("host-a  -> hello host-a boot 01234567 holds v0 underlay 127.0.0.1:9001") })
    #expect(lines.contains { $0.contains("host-a <-  push v7 [v7-1]: 1 VM(s), 0 gateway(s), 1 port block(s) on 203.0.113.10") })
    #expect(lines.contains { $0.contains("-> ack v7 [v7-1]") })
    #expect(lines.contains { $0.contains("(6 heartbeat(s))") })
    #expect(lines.contains { $0.contains("-> nack v8 [v8-2] keeps v7: vms[0]: bad") })
    #expect(lines.contains { $0.contains("-> port request r1 for vm-1/nic0 (has 1024 ports)") })
    #expect(lines.contains { $0.contains("<-  port grant r1: 203.0.113.10:2048+1024 in v9") })
    #expect(!lines.contains { $0.contains(" heartbeat") && !$0.contains("heartbeat(s)") })
    #expect(lines.dropFirst().allSatisfy { $0.count <= 100 }, "\(lines.filter { $0.count > 100 })")

    var every = TraceShow.Options()
    every.heartbeats = true
    let all = TraceShow.render(try TraceCodec.read(path: path), options: every)
    #expect(all.split(separator: "\n").filter { $0.hasSuffix(" heartbeat") }.count == 6)
  }

  @Test("the mermaid form is a sequence diagram with one arrow per message")
  func mermaid() throws {
    let path = temporaryFile("agent.jsonl")
    _ = try agentExchange(path: path)
    var options = TraceShow.Options()
    options.format = .mermaid
    let out = TraceShow.render(try TraceCodec.read(path: path), options: options)
    let lines = out.split(separator: "\n").map(String.init)
    #expect(lines[0] == "sequenceDiagram")
    #expect(lines.contains("  participant H1 as host-a"))
    #expect(lines.contains("  participant C as controller"))
    #expect(lines.filter { $0.contains("->>") }.count == 7)
    #expect(lines.contains("  C->>H1: push v8 [v8-2]: 0 VM(s), 0 gateway(s), 0 port block(s)"))
    #expect(lines.contains("  Note over H1,C: 6 heartbeat(s)"))
  }

  @Test("a controller's trace puts each host on the left and filters by peer")
  func controllerSide() throws {
    let path = temporaryFile("controller.jsonl")
    let trace = try ControlTrace(path: path, side: "controller", selfName: "127.0.0.1:7400")
    for host in ["host-a", "host-b"] {
      let stream = trace.nextStream()
      trace.record(.received, peer: host, stream: stream, Hostnat_V1_AgentMessage.with { $0.hello.hostID = host })
      trace.record(.sent, peer: host, stream: stream, Hostnat_V1_ControllerMessage.with { $0.push.config.version = 3; $0.push.config.hostID = host })
    }
    let records = try TraceCodec.read(path: path)
    var options = TraceShow.Options()
    options.peer = "host-b"
    let out = TraceShow.render(records, options: options)
    #expect(out.contains("host-b  -> hello host-b"))
    #expect(out.contains("host-b <-  push v3"))
    #expect(!out.contains("host-a"))
    #expect(Set(records.map(\.stream)) == [1, 2])
  }
}
