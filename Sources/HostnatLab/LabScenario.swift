/// A scenario `hostnat lab` can run: what it is called, what it shows, which lab it needs and how
/// it runs. Fault scenarios (`FaultScenario`) share one harness that measures traffic around the
/// fault; the others bring up their own lab and report in their own shape.
public protocol LabScenario: Sendable {
  /// The name `hostnat lab scenario NAME` takes.
  var name: String { get }
  /// One line for `--list` and the run's heading.
  var summary: String { get }
  /// The lab it runs on.
  var topology: ScenarioTopology { get }
  /// Whether it runs on the lab already running in its directory (bringing one up only when none
  /// is), rather than bringing up and stopping a lab of its own.
  var joinsRunningLab: Bool { get }
  /// Runs on `lab` and reports; the report's `passed` is the verdict.
  func run(on lab: Lab) async throws -> any ScenarioOutcome
}

/// The report of a scenario run: printed as one JSON object with `--json`.
public protocol ScenarioOutcome: JSONReport, Sendable {
  var passed: Bool { get }
}

extension ScenarioReport: ScenarioOutcome {}
extension ServerlessEgressReport: ScenarioOutcome {}
extension VPCEdgesReport: ScenarioOutcome {}

/// The topology files a scenario can run on.
public enum ScenarioTopology: Sendable {
  /// deploy/lab/default.yaml: three hosts, one gateway with two NAT IPs.
  case `default`
  /// deploy/lab/serverless.yaml: the Cloud Run walkthrough.
  case serverless

  /// The name the lab records.
  public var name: String {
    switch self {
    case .default: "default"
    case .serverless: "serverless"
    }
  }

  /// Where users read it.
  public var file: String { "deploy/lab/\(name).yaml" }

  /// The topology itself, from the embedded copy of the file (a test keeps the two identical).
  public var parsed: Topology {
    switch self {
    case .default: .default
    case .serverless: .serverless
    }
  }
}

/// What the fault harness checks after a fault scenario, besides the scenario's own checks.
public struct ScenarioExpectations: Sendable {
  /// How many of the NATed VMs' packets may go unanswered over the run.
  public enum Loss: Sendable {
    /// Not one.
    case none
    /// At most 5 %: what is in flight during the fault, never a share of the run. `why` says
    /// what the fault drops.
    case faultOnly(why: String)
  }

  /// What may happen to the NATed VMs' TCP connections.
  public enum Flows: Sendable {
    /// None breaks.
    case unbroken
    /// The fault breaks some on purpose: at least one must be reported broken.
    case brokenOnPurpose
    /// The fault restarts the servers (their TCP state dies with them): connections break, and
    /// at least as many must be established again.
    case reconnect
  }

  public var loss: Loss
  public var flows: Flows

  public init(loss: Loss = .none, flows: Flows = .unbroken) {
    self.loss = loss
    self.flows = flows
  }

  /// No packet lost, no flow broken, every new flow during the fault works.
  public static let lossless = ScenarioExpectations()

  /// A fault that may drop packets may also fail the new connections it catches.
  var newFlowsMayFail: Bool {
    if case .faultOnly = loss { true } else { false }
  }
}

/// Every scenario `hostnat lab scenario` runs, in `--list` order. (`hostnat lab demo` runs
/// `DemoScenario`, which has its own command and options.)
public enum LabScenarios {
  public static let all: [any LabScenario] = [
    ControllerKill(), ControllerPause(), AgentRestart(), EdgeRestart(), ControlPartition(), ControlChaos(), BadConfig(),
    DrainIP(), RemoveIPUndrained(), ControllerCrashDuringWrites(), DPACrash(), PortExhaustion(),
    ServerlessEgress(), VPCEdges(),
  ]

  public static func named(_ name: String) -> (any LabScenario)? { all.first { $0.name == name } }
}

extension LabScenario {
  /// Most scenarios need a lab of their own; fault scenarios say otherwise.
  public var joinsRunningLab: Bool { false }
}

extension Lab {
  /// Brings up a lab of `topology` in this directory.
  func up(_ topology: ScenarioTopology) async throws -> LabState {
    try await up(topology.parsed, topologyName: topology.name)
  }
}
