import ArgumentParser
import Foundation
import HostnatLab
import HostnatNetns

struct LabOptions: ParsableArguments {
  @Option(help: "The lab's directory: pids, ports, state and logs.") var dir: String = ".hostnat/lab"
}

struct LabCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lab",
    abstract: "A local hostnat cluster: controller, host agents, edge and VMs as processes on loopback.",
    subcommands: [LabUp.self, LabStatusCommand.self, LabDown.self, LabDemo.self, LabChaos.self, LabScenarioCommand.self, LabTopCommand.self, LabExec.self])
}

/// Runs a lab operation, printing a lab error as one line and exiting 1.
func labMain(_ body: () async throws -> Void) async throws {
  do {
    try await body()
  } catch let error as LabError {
    FileHandle.standardError.write(Data("ERROR: \(error.description)\n".utf8))
    throw ExitCode(1)
  }
}

struct LabUp: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "up", abstract: "Start a lab in the background.")
  @OptionGroup var lab: LabOptions
  @Option(help: "Topology YAML file (default: the embedded deploy/lab/default.yaml).") var topology: String?
  @Flag(help: "The controller, the edge and each agent write every control message to control-trace.jsonl in their state dir.")
  var traceControl = false
  @Flag(help: "Namespaces mode (Linux, root): each VM and the Internet is a network namespace where real programs run (hostnat lab exec).")
  var netns = false

  func run() async throws {
    try await labMain {
      let (parsed, name) = try loadTopology(topology)
      var runner = Lab(dir: lab.dir)
      runner.traceControl = traceControl
      runner.netns = netns
      _ = try await runner.up(parsed, topologyName: name)
    }
  }
}

func loadTopology(_ path: String?) throws -> (Topology, String) {
  guard let path else { return (Topology.default, "default") }
  guard let data = FileManager.default.contents(atPath: path) else { throw LabError("--topology: cannot read \(path)") }
  return (try Topology.parse(yaml: String(decoding: data, as: UTF8.self)), path)
}

struct LabStatusCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "status", abstract: "Processes, hosts' config versions, flows, drops and VM traffic.")
  @OptionGroup var lab: LabOptions
  @Flag(help: "One JSON object.") var json = false

  func run() async throws {
    try await labMain {
      let report = try await Lab(dir: lab.dir).status()
      print(json ? report.json() : report.text())
    }
  }
}

struct LabDown: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "down", abstract: "Stop every process of the lab (logs stay).")
  @OptionGroup var lab: LabOptions

  func run() async throws {
    try await labMain { try await Lab(dir: lab.dir).down() }
  }
}

struct LabDemo: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "demo",
    abstract: DemoScenario().summary)
  @Option(help: "The lab's directory (default: a fresh temporary one).") var dir: String?
  @Flag(help: "Print the report as one JSON object.") var json = false
  @Option(help: "Seconds of traffic in each phase.") var phaseSeconds: Double = 4

  func run() async throws {
    try await labMain {
      try await runScenario(DemoScenario(phaseSeconds: phaseSeconds), dir: dir ?? (NSTemporaryDirectory() + "hostnat-demo-\(getpid())"), json: json)
    }
  }
}

struct LabChaos: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "chaos",
    abstract: "Inject a fault by hand: kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT), restart, partition or heal a component.",
    discussion: "partition/heal cut and restore the control channel of agent/HOST or edge while its data path stays up; `chaos control` disturbs individual control messages.",
    subcommands: [LabChaosSignal.self, LabChaosControl.self],
    defaultSubcommand: LabChaosSignal.self)
}

struct LabChaosSignal: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "signal", abstract: "kill, pause, resume, restart, partition or heal a component.", shouldDisplay: false)
  @OptionGroup var lab: LabOptions
  @Argument(help: "kill, pause, resume, restart, partition or heal.") var action: String
  @Argument(help: "controller, edge, agent/HOST or vm/NAME.") var component: String
  @Flag(help: "restart: SIGTERM and wait instead of SIGKILL.") var graceful = false

  func run() async throws {
    try await labMain {
      guard let chaos = ChaosAction(rawValue: action) else {
        throw LabError("action: \(action) is not one of \(ChaosAction.allCases.map(\.rawValue).joined(separator: ", "))")
      }
      print(try await Lab(dir: lab.dir).chaos(chaos, component, graceful: graceful))
    }
  }
}

struct LabScenarioCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "scenario",
    abstract: "Run a failure scenario under traffic, measure, heal and report (exit 0 only if it passed).")
  @Argument(help: "The scenario (see --list).") var name: String?
  @Option(help: "Use the lab running there, or bring one up there (default: a fresh temporary dir).") var dir: String?
  @Flag(help: "Print the report as one JSON object.") var json = false
  @Flag(help: "List the scenarios.") var list = false

  func run() async throws {
    try await labMain {
      if list || name == nil {
        let width = (LabScenarios.all.map(\.name.count).max() ?? 0) + 2
        for s in LabScenarios.all {
          let lab = s.joinsRunningLab ? "" : "(own lab: \(s.topology.file)) "
          print(s.name.padding(toLength: width, withPad: " ", startingAt: 0) + lab + s.summary)
        }
        return
      }
      guard let scenario = LabScenarios.named(name ?? "") else {
        throw LabError("no scenario \(name ?? ""); known: \(LabScenarios.all.map(\.name).joined(separator: ", "))")
      }
      try await runScenario(scenario, dir: dir ?? (NSTemporaryDirectory() + "hostnat-scenario-\(getpid())"), json: json)
    }
  }
}

/// Runs a scenario in `dir`: its progress on stdout, or only its report as one JSON line with
/// `json`; exits 1 unless it passed.
func runScenario(_ scenario: any LabScenario, dir: String, json: Bool) async throws {
  let say: @Sendable (String) -> Void = { line in if !json { print(line) } }
  let report = try await scenario.run(on: Lab(dir: dir, say: say))
  if json { print(report.json()) }
  if !report.passed { throw ExitCode(1) }
}

struct LabChaosControl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "control", abstract: "Drop, delay and duplicate control messages (pushes and ACKs) on one channel; all zero to stop.")
  @OptionGroup var lab: LabOptions
  @Argument(help: "agent/HOST or edge.") var component: String
  @Option(help: "Probability of dropping each message (0-1).") var drop: Double = 0
  @Option(help: "Delay added to each message, ms.") var delay: Int = 0
  @Option(help: "Probability of sending a message twice (0-1).") var duplicate: Double = 0

  func run() async throws {
    try await labMain {
      guard (0...1).contains(drop), (0...1).contains(duplicate), (0...60_000).contains(delay) else {
        throw LabError("--drop and --duplicate take 0...1, --delay 0...60000 ms")
      }
      let l = Lab(dir: lab.dir)
      var faults = try l.controlFaults(component)
      faults.drop = drop
      faults.delayMs = delay
      faults.duplicate = duplicate
      try l.setControlFaults(component, faults)
      print("\(component): control messages dropped \(drop), delayed \(delay) ms, duplicated \(duplicate)")
    }
  }
}

struct LabTopCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "top", abstract: "A live view of the lab: hosts, VMs and NAT IPs, refreshed every second (Ctrl-C to quit).")
  @OptionGroup var lab: LabOptions
  @Option(help: "Stop after this many refreshes (default: until interrupted).") var iterations: Int?

  func run() async throws {
    try await labMain {
      let top = LabTop(lab: Lab(dir: lab.dir, say: { _ in }))
      var sample: LabTop.Sample?
      var count = 0
      let interactive = isatty(1) == 1
      while iterations.map({ count < $0 }) ?? true {
        let (screen, next) = try await top.render(previous: sample)
        sample = next
        // Home and clear on a terminal; plain frames separated by a blank line otherwise.
        print(interactive ? "\u{1B}[H\u{1B}[2J" + screen : screen + "\n")
        count += 1
        if iterations.map({ count < $0 }) ?? true { try await Task.sleep(for: .seconds(1)) }
      }
    }
  }
}

/// `hostnat lab exec TARGET -- CMD`: a command inside a namespace of a `--netns` lab.
struct LabExec: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "exec",
    abstract: "Run a command inside a VM's or the Internet's namespace of a lab started with --netns.",
    discussion: "Example: hostnat lab exec vm/vm-1 -- ping -c 3 192.0.2.100. The command's exit status is returned.")
  @OptionGroup var lab: LabOptions
  @Argument(help: "vm/NAME or internet.") var target: String
  @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var command: [String] = []

  func run() async throws {
    var status: Int32 = 0
    try await labMain {
      guard !command.isEmpty else { throw LabError("no command: hostnat lab exec \(target) -- CMD [ARGS...]") }
      let namespace = try NetnsLab.namespace(labDir: Lab(dir: lab.dir).dir, target: target)
      guard let ip = Command.find("ip") else {
        throw LabError("ip (iproute2) is not installed")
      }
      status = try Processes.runInForeground(ip, ["netns", "exec", namespace] + command)
    }
    if status != 0 { throw ExitCode(status) }
  }
}
