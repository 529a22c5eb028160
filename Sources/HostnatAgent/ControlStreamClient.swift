import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import HostnatContracts
import HostnatControlRules
import HostnatProto
import HostnatTrace
import ServiceLifecycle
import SwiftProtobuf
import Synchronization

/// One side of a control protocol as a node speaks it: the RPC, and how the node's messages carry
/// the hello and heartbeats. Agent and edge each have one; `ControlStreamClient` does the rest.
protocol ControlProtocol: SendableMetatype {
  associatedtype Outgoing: SwiftProtobuf.Message & Sendable
  associatedtype Incoming: SwiftProtobuf.Message & Sendable
  /// The bidirectional `Connect` RPC.
  static var connect: MethodDescriptor { get }
  static func hello(_ hello: Hostnat_V1_Hello) -> Outgoing
  static func heartbeat(sentMs: Int64) -> Outgoing
  static func ack(_ ack: Hostnat_V1_Ack) -> Outgoing
  static func nack(_ nack: Hostnat_V1_Nack) -> Outgoing
}

extension ControlProtocol {
  /// The hello that opens every stream: who this node is, which boot, what it holds (token and
  /// blocks, control.proto rules 1 and 9), what it understands (rule 10).
  static func hello(
    nodeID: String, bootID: String, applied: FencingToken, underlay: String, blocks: [Hostnat_V1_HeldBlock] = [], fenced: Bool = false
  ) -> Outgoing {
    hello(.with {
      $0.hostID = nodeID
      $0.bootID = bootID
      $0.appliedVersion = applied.version
      $0.appliedEpoch = applied.epoch
      $0.appliedStoreID = applied.storeID
      $0.appliedDigest = applied.digest
      $0.underlayAddress = underlay
      $0.softwareVersion = "hostnat"
      $0.blocks = blocks
      $0.features = ProtocolFeature.supported
      $0.fenced = fenced
    })
  }

  /// The answer to a push with `nonce` stamped `offered`, `held` being the version in force before it.
  static func answer(_ answer: SnapshotAnswer, nonce: String, offered: FencingToken, held: UInt64) -> Outgoing {
    switch answer {
    case .ack:
      ack(.with { $0.nonce = nonce; $0.version = offered.version; $0.epoch = offered.epoch; $0.digest = offered.digest })
    case .nack(let reason):
      nack(.with { $0.nonce = nonce; $0.version = offered.version; $0.epoch = offered.epoch; $0.appliedVersion = held; $0.error = reason })
    }
  }
}

/// A host agent's stream (`HostControlService.Connect`).
enum HostControl: ControlProtocol {
  typealias Outgoing = Hostnat_V1_AgentMessage
  typealias Incoming = Hostnat_V1_ControllerMessage
  static var connect: MethodDescriptor { Hostnat_V1_HostControlService.Method.Connect.descriptor }
  static func hello(_ hello: Hostnat_V1_Hello) -> Hostnat_V1_AgentMessage { .with { $0.hello = hello } }
  static func heartbeat(sentMs: Int64) -> Hostnat_V1_AgentMessage { .with { $0.heartbeat = .with { $0.sentMs = sentMs } } }
  static func ack(_ ack: Hostnat_V1_Ack) -> Hostnat_V1_AgentMessage { .with { $0.ack = ack } }
  static func nack(_ nack: Hostnat_V1_Nack) -> Hostnat_V1_AgentMessage { .with { $0.nack = nack } }
}

/// The edge's stream (`EdgeControlService.Connect`).
enum EdgeControl: ControlProtocol {
  typealias Outgoing = Hostnat_V1_EdgeMessage
  typealias Incoming = Hostnat_V1_EdgeControllerMessage
  static var connect: MethodDescriptor { Hostnat_V1_EdgeControlService.Method.Connect.descriptor }
  static func hello(_ hello: Hostnat_V1_Hello) -> Hostnat_V1_EdgeMessage { .with { $0.hello = hello } }
  static func heartbeat(sentMs: Int64) -> Hostnat_V1_EdgeMessage { .with { $0.heartbeat = .with { $0.sentMs = sentMs } } }
  static func ack(_ ack: Hostnat_V1_Ack) -> Hostnat_V1_EdgeMessage { .with { $0.ack = ack } }
  static func nack(_ nack: Hostnat_V1_Nack) -> Hostnat_V1_EdgeMessage { .with { $0.nack = nack } }
}

/// Thrown inside a stream when the controller has been silent too long (a SIGSTOPped controller
/// keeps its TCP connection open; only the heartbeat tells).
struct ControllerSilent: Error, CustomStringConvertible {
  var seconds: Double
  var description: String { "no message from the controller for \(seconds) s" }
}

/// The client side of a node's one control stream, shared by agent and edge (the controller's
/// side is `ControlStream`). Keeps the stream up until graceful shutdown: each attempt on a fresh
/// connection (no state survives from a dead one), a hello first, heartbeats, a silence watchdog,
/// and reconnects with jittered exponential backoff. Every message from the controller goes to
/// `handle`; its answer, if any, goes back on the same stream.
final class ControlStreamClient<Control: ControlProtocol>: Service, Sendable {
  let link: ControlLink
  let trace: ControlTrace?
  /// The hello for a new stream (it carries the version applied at that moment).
  let hello: @Sendable () -> Control.Outgoing
  let handle: @Sendable (Control.Incoming) -> Control.Outgoing?
  /// The open stream's outbox, for messages the node starts itself (port requests, usage).
  private let outbox = Mutex<AsyncStream<Control.Outgoing>.Continuation?>(nil)

  init(
    link: ControlLink, trace: ControlTrace?, hello: @escaping @Sendable () -> Control.Outgoing,
    handle: @escaping @Sendable (Control.Incoming) -> Control.Outgoing?
  ) {
    self.link = link
    self.trace = trace
    self.hello = hello
    self.handle = handle
  }

  /// Whether a stream is open to send on.
  var isOpen: Bool { outbox.withLock { $0 != nil } }

  /// Queues a message on the open stream; dropped when none is open (the node asks again later).
  func send(_ message: Control.Outgoing) {
    _ = outbox.withLock { $0 }?.yield(message)
  }

  func run() async throws {
    await cancelWhenGracefulShutdown { await self.maintain() }
  }

  /// Runs streams until cancelled, backing off with jitter between failed attempts.
  private func maintain() async {
    let timing = link.timing
    var backoff = timing.initialBackoff
    while !Task.isCancelled {
      let started = ContinuousClock.now
      do {
        let transport = try HTTP2ClientTransport.Posix(
          target: .ipv4(address: link.host, port: link.port), transportSecurity: .plaintext)
        try await withGRPCClient(transport: transport) { client in
          try await self.session(client)
        }
        link.update { $0.lastError = "stream ended by the controller" }
      } catch is CancellationError {
        break
      } catch {
        link.update { $0.lastError = "\(error)" }
      }
      link.update { $0.connected = false }
      if Task.isCancelled { break }
      // A stream that lived a while was a real connection: start backing off from scratch.
      if ContinuousClock.now - started > .seconds(5) { backoff = timing.initialBackoff }
      let jittered = Double.random(in: 0.5...1.0) * Double(backoff.components.attoseconds / 1_000_000_000_000_000 + backoff.components.seconds * 1000)
      try? await Task.sleep(for: .milliseconds(Int64(jittered)))
      backoff = min(backoff * 2, timing.maximumBackoff)
    }
    link.update { $0.connected = false }
  }

  /// One stream: the hello, then the outbox written while the controller's messages are served.
  private func session(_ client: GRPCClient<HTTP2ClientTransport.Posix>) async throws {
    let (outbound, continuation) = AsyncStream<Control.Outgoing>.makeStream()
    continuation.yield(hello())
    link.heard()
    outbox.withLock { $0 = continuation }
    defer { outbox.withLock { $0 = nil } }
    let trace = self.trace
    let stream = trace?.nextStream() ?? 0
    let controller = link.status.controller
    let request = StreamingClientRequest<Control.Outgoing> { writer in
      for await message in outbound {
        trace?.record(.sent, peer: controller, stream: stream, message)
        try await writer.write(message)
      }
    }
    // Fail at once when the controller is unreachable rather than queue: `maintain` owns retrying.
    var options = CallOptions.defaults
    options.waitForReady = false
    try await client.bidirectionalStreaming(
      request: request, descriptor: Control.connect,
      serializer: ProtobufSerializer<Control.Outgoing>(), deserializer: ProtobufDeserializer<Control.Incoming>(),
      options: options
    ) { response in
      try await self.serve(response.messages, outbound: continuation) { message in
        trace?.record(.received, peer: controller, stream: stream, message)
        return self.handle(message)
      }
    }
  }

  /// The receive side of one stream: marks the link connected at the first message, sends
  /// heartbeats, fails when the controller goes silent, and passes each message to `handle`,
  /// whose answer (if any) is queued on `outbound`. Ends `outbound` when it returns, which ends
  /// the request side too.
  private func serve(
    _ messages: RPCAsyncSequence<Control.Incoming, any Error>,
    outbound: AsyncStream<Control.Outgoing>.Continuation,
    handle: @escaping @Sendable (Control.Incoming) -> Control.Outgoing?
  ) async throws {
    defer { outbound.finish() }
    let link = self.link
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await Self.watchdog(link) }
      group.addTask {
        while true {
          try await Task.sleep(for: link.timing.heartbeat)
          outbound.yield(Control.heartbeat(sentMs: nowMs()))
        }
      }
      group.addTask {
        var first = true
        for try await message in messages {
          link.heard()
          link.update { $0.lastMessageMs = nowMs() }
          if first {
            first = false
            link.update { $0.connected = true; $0.connects += 1; $0.lastError = nil }
          }
          if let answer = handle(message) { outbound.yield(answer) }
        }
      }
      try await group.next()
      group.cancelAll()
    }
  }

  /// Fails when the controller has been silent longer than the timeout; run beside a stream.
  private static func watchdog(_ link: ControlLink) async throws {
    let timeout = link.timing.silenceTimeout
    let limit = Int64(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
    while true {
      try await Task.sleep(for: .milliseconds(200))
      let silent = nowMs() - link.status.lastHeardMs
      if silent > limit { throw ControllerSilent(seconds: Double(silent) / 1000) }
    }
  }
}
