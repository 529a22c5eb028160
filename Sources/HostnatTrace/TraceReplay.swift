import HostnatAddressing
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HostnatProto
import SwiftProtobuf
import Synchronization

/// How to replay a recorded exchange (`hostnat trace replay`).
public struct ReplayOptions: Sendable {
  /// How pushed versions are chosen.
  public enum Versions: String, Sendable, CaseIterable {
    /// Shift every version so the first is above what the agent holds: a live agent that has
    /// since moved on still applies them (rule 1 would NACK older ones as stale).
    case rebase
    /// Send the recorded versions unchanged, to study what the agent does with them.
    case recorded
  }

  /// The agent to replay to: its host id, as it says in its hello.
  public var agent: String
  /// The recorded host whose exchange is replayed (default: the only host in the trace, or `agent`).
  public var from: String?
  public var host = "127.0.0.1"
  public var port = 0
  public var versions = Versions.rebase
  /// How long to wait for the agent to connect.
  public var connectTimeout: Duration = .seconds(60)
  /// How long to wait for the answer to each push.
  public var answerTimeout: Duration = .seconds(5)
  /// Heartbeat interval towards the agent (its watchdog ends a silent stream after 3 s).
  public var heartbeat: Duration = .seconds(1)
  /// Where the replay writes its own trace of the exchange, if anywhere.
  public var trace: ControlTrace?

  public init(agent: String) { self.agent = agent }
}

/// One replayed controller message and how the agent took it, beside how the recorded agent did.
public struct ReplayStep: Codable, Sendable, Equatable {
  /// `push` or `portGrant`.
  public var type: String
  public var recordedVersion: UInt64
  public var sentVersion: UInt64
  public var nonce: String
  /// `ack`, `nack: REASON`, `none` (no answer was recorded) or `-` (a grant expects none).
  public var recorded: String
  public var replayed: String
  /// The agent answered the same way (ACK for ACK, NACK for NACK; reasons may name other versions).
  public var same: Bool
}

/// The outcome of a replay.
public struct ReplayReport: Encodable, Sendable {
  public var agent: String
  public var from: String
  public var bootID: String
  /// The version the agent said it held when it connected.
  public var heldVersion: UInt64
  /// Added to every recorded version.
  public var versionOffset: UInt64
  public var steps: [ReplayStep]
  /// Messages the agent sent on its own (heartbeats, usage reports, port requests).
  public var agentMessages: Int
  public var same: Int { steps.filter(\.same).count }
  public var different: Int { steps.count - same }
  public var ok: Bool { different == 0 }

  enum CodingKeys: String, CodingKey {
    case agent, from, bootID, heldVersion, versionOffset, steps, agentMessages, same, different, ok
  }

  public func encode(to encoder: any Swift.Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(agent, forKey: .agent)
    try c.encode(from, forKey: .from)
    try c.encode(bootID, forKey: .bootID)
    try c.encode(heldVersion, forKey: .heldVersion)
    try c.encode(versionOffset, forKey: .versionOffset)
    try c.encode(steps, forKey: .steps)
    try c.encode(agentMessages, forKey: .agentMessages)
    try c.encode(same, forKey: .same)
    try c.encode(different, forKey: .different)
    try c.encode(ok, forKey: .ok)
  }

  init(agent: String, from: String, bootID: String, heldVersion: UInt64, versionOffset: UInt64, steps: [ReplayStep], agentMessages: Int) {
    self.agent = agent
    self.from = from
    self.bootID = bootID
    self.heldVersion = heldVersion
    self.versionOffset = versionOffset
    self.steps = steps
    self.agentMessages = agentMessages
  }

  public var text: String {
    var out = "agent \(agent) (boot \(bootID.prefix(8))) held v\(heldVersion); replaying \(from)'s exchange"
      + (versionOffset > 0 ? ", versions shifted by +\(versionOffset)" : "") + "\n"
    for s in steps {
      let version = s.sentVersion == s.recordedVersion ? "v\(s.sentVersion)" : "v\(s.recordedVersion)->v\(s.sentVersion)"
      out += "  \(s.same ? "same     " : "DIFFERENT") \(s.type.padding(toLength: 9, withPad: " ", startingAt: 0)) \(version.padding(toLength: 10, withPad: " ", startingAt: 0)) recorded \(s.recorded) | replayed \(s.replayed)\n"
    }
    out += "\(steps.count) message(s) replayed: \(same) answered as recorded, \(different) differently; the agent sent \(agentMessages) message(s) of its own\n"
    return out
  }
}

/// A recorded controller message to send again, with the agent's recorded answer.
struct PlannedStep {
  var message: Hostnat_V1_ControllerMessage
  var recordedAnswer: String
}

/// Plays the controller's side of a recorded exchange to one live agent: it listens like a
/// controller, waits for the agent's hello, sends the recorded pushes and port grants in order
/// (one push at a time, waiting for its ACK or NACK), keeps the stream alive with heartbeats,
/// and compares each answer with the recorded one. The agent keeps the last config it ACKed,
/// as it would from a real controller; pointed back at its controller, it is brought up to date
/// by the next hello (the controller re-issues its snapshot above any version the agent holds).
public struct TraceReplay: Sendable {
  public let records: [TraceRecord]
  public let options: ReplayOptions

  public init(records: [TraceRecord], options: ReplayOptions) {
    self.records = records
    self.options = options
  }

  /// The recorded host whose exchange is replayed.
  public func source() throws(TraceError) -> String {
    let hosts = Set(records.filter { $0.proto.hasPrefix("hostnat.v1.Agent") || $0.proto == "hostnat.v1.ControllerMessage" }.map { TraceShow.parties($0).host })
    if let from = options.from {
      guard hosts.contains(from) else {
        throw TraceError("--from: \(from) has no host exchange in the trace (hosts: \(hosts.sorted().joined(separator: ", ")))")
      }
      return from
    }
    if hosts.count == 1 { return hosts.first! }
    if hosts.contains(options.agent) { return options.agent }
    if hosts.isEmpty {
      throw TraceError("the trace holds no host agent exchange (edge exchanges cannot be replayed)")
    }
    throw TraceError("the trace holds several hosts (\(hosts.sorted().joined(separator: ", "))): name one with --from")
  }

  /// The controller's recorded messages to `host`, with the host's recorded answers.
  func plan(host: String) throws(TraceError) -> [PlannedStep] {
    let exchange = records.filter { TraceShow.parties($0).host == host && ($0.proto == "hostnat.v1.ControllerMessage" || $0.proto == "hostnat.v1.AgentMessage") }
    var answers: [String: String] = [:]
    for r in exchange where !r.fromController {
      guard case .agent(let m) = try TracedMessage(r) else { continue }
      switch m.message {
      case .ack(let a)?: answers[a.nonce] = "ack"
      case .nack(let n)?: answers[n.nonce] = "nack: \(n.error)"
      default: break
      }
    }
    var steps: [PlannedStep] = []
    for r in exchange where r.fromController {
      guard case .controller(let m) = try TracedMessage(r) else { continue }
      switch m.message {
      case .push(let p)?: steps.append(PlannedStep(message: m, recordedAnswer: answers[p.nonce] ?? "none"))
      case .portGrant?: steps.append(PlannedStep(message: m, recordedAnswer: "-"))
      default: continue
      }
    }
    guard !steps.isEmpty else { throw TraceError("the trace holds no push or port grant to \(host)") }
    return steps
  }

  /// Runs the replay; `onListening` gets the bound address once the agent can connect.
  public func run(onListening: @escaping @Sendable (String, Int) -> Void = { _, _ in }) async throws -> ReplayReport {
    let from = try source()
    let steps = try plan(host: from)
    let session = ReplaySession(agent: options.agent, from: from, steps: steps, options: options)
    let server = GRPCServer(
      transport: .http2NIOPosix(address: .ipv4(host: options.host, port: options.port), transportSecurity: .plaintext),
      services: [session])
    return try await withThrowingTaskGroup(of: ReplayReport?.self) { group in
      group.addTask {
        try await server.serve()
        return nil
      }
      let bound: GRPCNIOTransportCore.SocketAddress
      do {
        bound = try await server.transport.listeningAddress
      } catch {
        server.beginGracefulShutdown()
        throw TraceError("--listen \(options.host):\(options.port): \(error)")
      }
      onListening(bound.ipv4?.host ?? options.host, bound.ipv4?.port ?? options.port)
      group.addTask {
        defer { server.beginGracefulShutdown() }
        return try await session.report(connectTimeout: options.connectTimeout)
      }
      var report: ReplayReport?
      for try await result in group {
        if let result { report = result }
      }
      guard let report else { throw TraceError("the replay ended without a report") }
      return report
    }
  }
}

/// The controller side of the replay: accepts one stream from the named agent and drives it.
final class ReplaySession: Hostnat_V1_HostControlService.SimpleServiceProtocol, Sendable {
  let agent: String
  let from: String
  let steps: [PlannedStep]
  let options: ReplayOptions
  private let state = Mutex<(taken: Bool, report: ReplayReport?, failure: String?)>((false, nil, nil))
  private let answers = Mutex<[String: Hostnat_V1_AgentMessage]>([:])
  private let agentMessages = Atomic<Int>(0)

  init(agent: String, from: String, steps: [PlannedStep], options: ReplayOptions) {
    self.agent = agent
    self.from = from
    self.steps = steps
    self.options = options
  }

  /// Waits until a stream has run the whole plan (or failed), or the agent did not connect in time.
  func report(connectTimeout: Duration) async throws -> ReplayReport {
    let deadline = ContinuousClock.now + connectTimeout
    while true {
      let (taken, report, failure) = state.withLock { ($0.taken, $0.report, $0.failure) }
      if let report { return report }
      if let failure { throw TraceError(failure) }
      if !taken && ContinuousClock.now > deadline {
        throw TraceError("agent \(agent) did not connect within \(connectTimeout) (start it with --controller pointing at the replay)")
      }
      try await Task.sleep(for: .milliseconds(20))
    }
  }

  func connect(
    request: RPCAsyncSequence<Hostnat_V1_AgentMessage, any Error>,
    response: RPCWriter<Hostnat_V1_ControllerMessage>,
    context: ServerContext
  ) async throws {
    let trace = options.trace
    let stream = trace?.nextStream() ?? 0
    let shared = StreamShared()
    let (outbox, continuation) = AsyncStream<Hostnat_V1_ControllerMessage>.makeStream()
    do {
      let report = try await withThrowingTaskGroup(of: ReplayReport?.self) { group in
        group.addTask {
          var first = true
          for try await message in request {
            trace?.record(.received, peer: self.agent, stream: stream, message)
            if first {
              first = false
              try self.accept(message)
              shared.ours.store(true, ordering: .relaxed)
              if case .hello(let h)? = message.message { shared.hello.withLock { $0 = h } }
              continue
            }
            switch message.message {
            case .ack(let a)?: self.answers.withLock { $0[a.nonce] = message }
            case .nack(let n)?: self.answers.withLock { $0[n.nonce] = message }
            default: self.agentMessages.add(1, ordering: .relaxed)
            }
          }
          throw TraceError("agent \(self.agent) ended the stream before the replay was done")
        }
        group.addTask {
          for await message in outbox {
            trace?.record(.sent, peer: self.agent, stream: stream, message)
            try await response.write(message)
          }
          return nil
        }
        group.addTask { [options] in
          while shared.hello.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(5)) }
          while true {
            try await Task.sleep(for: options.heartbeat)
            continuation.yield(.with { $0.heartbeat.sentMs = Int64(Date().timeIntervalSince1970 * 1000) })
          }
        }
        group.addTask {
          defer { continuation.finish() }
          var accepted: Hostnat_V1_Hello?
          while accepted == nil {
            try await Task.sleep(for: .milliseconds(5))
            accepted = shared.hello.withLock { $0 }
          }
          return try await self.drive(hello: accepted!, send: continuation)
        }
        defer { group.cancelAll() }
        while let result = try await group.next() {
          if let result { return result }
        }
        throw TraceError("the replay stream ended without a report")
      }
      state.withLock { $0.report = report }
    } catch {
      // A stream from the wrong host (or a second one) is turned away; only the failure of the
      // stream that carries the replay fails the replay.
      if shared.ours.load(ordering: .relaxed) {
        state.withLock { $0.failure = ($0.failure ?? "\(error)") }
      }
      throw error
    }
  }

  /// Takes the first message of a stream: the named agent's hello, once.
  func accept(_ message: Hostnat_V1_AgentMessage) throws {
    guard case .hello(let hello)? = message.message else {
      throw RPCError(code: .invalidArgument, message: "the first message on a control stream must be hello")
    }
    guard hello.hostID == agent else {
      throw RPCError(code: .failedPrecondition, message: "this is a trace replay waiting for host \(agent), not \(hello.hostID)")
    }
    guard state.withLock({ s in
      if s.taken { return false }
      s.taken = true
      return true
    }) else {
      throw RPCError(code: .failedPrecondition, message: "the replay has already run its exchange with \(agent)")
    }
  }

  /// Sends each planned message and waits for the answer to each push.
  func drive(hello: Hostnat_V1_Hello, send: AsyncStream<Hostnat_V1_ControllerMessage>.Continuation) async throws -> ReplayReport {
    let recordedVersions = steps.compactMap { step -> UInt64? in
      if case .push(let p)? = step.message.message { return p.config.version }
      return nil
    }
    var offset: UInt64 = 0
    if options.versions == .rebase, let lowest = recordedVersions.min(), hello.appliedVersion >= lowest {
      offset = hello.appliedVersion + 1 - lowest
    }
    var results: [ReplayStep] = []
    for (index, step) in steps.enumerated() {
      var message = step.message
      switch message.message {
      case .push(var push)?:
        let recordedVersion = push.config.version
        push.config.version += offset
        push.config.hostID = agent
        push.nonce = "replay-\(index + 1)-v\(push.config.version)"
        message.push = push
        send.yield(message)
        let answer = try await answer(nonce: push.nonce)
        let replayed: String
        switch answer?.message {
        case .ack?: replayed = "ack"
        case .nack(let n)?: replayed = "nack: \(n.error)"
        default: replayed = "none within \(options.answerTimeout)"
        }
        let same = step.recordedAnswer.prefix(4) == replayed.prefix(4) || (step.recordedAnswer == "none" && answer == nil)
        results.append(ReplayStep(
          type: "push", recordedVersion: recordedVersion, sentVersion: push.config.version, nonce: push.nonce,
          recorded: step.recordedAnswer, replayed: replayed, same: same))
      case .portGrant(var grant)?:
        let recordedVersion = grant.version
        if grant.version > 0 { grant.version += offset }
        message.portGrant = grant
        send.yield(message)
        results.append(ReplayStep(
          type: "portGrant", recordedVersion: recordedVersion, sentVersion: grant.version, nonce: grant.requestID,
          recorded: "-", replayed: "-", same: true))
      default:
        continue
      }
    }
    return ReplayReport(
      agent: agent, from: from, bootID: hello.bootID, heldVersion: hello.appliedVersion, versionOffset: offset,
      steps: results, agentMessages: agentMessages.load(ordering: .relaxed))
  }

  func answer(nonce: String) async throws -> Hostnat_V1_AgentMessage? {
    let deadline = ContinuousClock.now + options.answerTimeout
    while ContinuousClock.now < deadline {
      if let answer = answers.withLock({ $0[nonce] }) { return answer }
      try await Task.sleep(for: .milliseconds(5))
    }
    return nil
  }
}

/// What a replay stream's tasks share: the accepted hello, and whether the stream is the replay's.
final class StreamShared: Sendable {
  let hello = Mutex<Hostnat_V1_Hello?>(nil)
  let ours = Atomic<Bool>(false)
}
