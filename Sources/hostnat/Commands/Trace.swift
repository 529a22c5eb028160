import ArgumentParser
import Foundation
import HostnatAddressing
import HostnatTrace

/// `hostnat trace`: read and re-run control traces written with `--trace-control`.
struct TraceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "trace", abstract: "Study the control protocol: read a control trace, or replay it against a live agent.",
    subcommands: [TraceShowCommand.self, TraceReplayCommand.self])
}

struct TraceShowCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "show",
    abstract: "Print a control trace as a readable sequence of exchanges (host on the left, controller on the right).")

  @Argument(help: "A trace file written with --trace-control.") var file: String
  @Option(help: "text, mermaid (a sequence diagram) or json (the records, one per line).") var format: String = "text"
  @Option(help: "Only the exchange with this host (a controller's trace holds every host's).") var peer: String?
  @Flag(help: "Show every heartbeat instead of counting them.") var heartbeats = false
  @Flag(help: "Print each message's protobuf JSON under its line.") var full = false

  func run() throws {
    let records: [TraceRecord]
    do {
      records = try TraceCodec.read(path: file)
    } catch {
      throw traceFailure(error.description)
    }
    if format == "json" {
      for r in records where peer == nil || TraceShow.parties(r).host == peer { print(TraceCodec.line(r), terminator: "") }
      return
    }
    guard let shape = TraceShow.Format(rawValue: format) else {
      throw traceFailure("--format: \(format) is not text, mermaid or json")
    }
    var options = TraceShow.Options()
    options.format = shape
    options.peer = peer
    options.heartbeats = heartbeats
    options.full = full
    print(TraceShow.render(records, options: options), terminator: "")
  }
}

struct TraceReplayCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "replay",
    abstract: "Play the controller's side of a recorded exchange to a live agent and compare its answers.",
    discussion: """
      The replay listens like a controller; start (or restart) the agent with --controller pointing at \
      --listen. It sends the recorded pushes and port grants in order, one push at a time, and reports \
      for each whether the agent answered as recorded. Exit status: 0 all answered as recorded, 1 some \
      differently, 2 the replay could not run. Point the agent back at its controller afterwards: the \
      controller re-issues its snapshot above any version the agent holds.
      """)

  @Argument(help: "A trace file written with --trace-control (by the controller or by an agent).") var file: String
  @Option(help: "Host id of the agent to replay to (the one whose hello is accepted).") var agent: String
  @Option(help: "Address to listen on like a controller, HOST:PORT (port 0: any; the line 'replay listening on' names it).")
  var listen: String = "127.0.0.1:0"
  @Option(help: "The recorded host whose exchange is replayed (default: the only one, or --agent).") var from: String?
  @Option(help: "rebase (shift versions above what the agent holds) or recorded (send them unchanged).") var versions: String = "rebase"
  @Option(help: "Seconds to wait for the agent to connect.") var connectTimeout: Double = 60
  @Option(help: "Seconds to wait for the answer to each push.") var answerTimeout: Double = 5
  @Option(help: "Also write the replayed exchange to this trace file.") var record: String?
  @Flag(help: "Print the report as JSON.") var json = false

  func run() async throws {
    let records: [TraceRecord]
    do {
      records = try TraceCodec.read(path: file)
    } catch {
      throw traceFailure(error.description)
    }
    let address: SocketAddress
    do {
      address = try SocketAddress.parse(listen, flag: "--listen", allowPortZero: true)
    } catch {
      throw traceFailure(error.description)
    }
    guard let mode = ReplayOptions.Versions(rawValue: versions) else {
      throw traceFailure("--versions: \(versions) is not rebase or recorded")
    }
    guard connectTimeout > 0, answerTimeout > 0 else { throw traceFailure("--connect-timeout and --answer-timeout must be positive") }
    var options = ReplayOptions(agent: agent)
    options.from = from
    options.host = address.host
    options.port = Int(address.port)
    options.versions = mode
    options.connectTimeout = .milliseconds(Int64(connectTimeout * 1000))
    options.answerTimeout = .milliseconds(Int64(answerTimeout * 1000))
    if let record {
      do {
        options.trace = try ControlTrace(path: record, side: "replay", selfName: listen)
      } catch {
        throw traceFailure("--record: \(error.description)")
      }
    }
    let report: ReplayReport
    do {
      let agent = self.agent
      report = try await TraceReplay(records: records, options: options).run { host, port in
        FileHandle.standardOutput.write(Data("replay listening on \(host):\(port) for agent \(agent)\n".utf8))
      }
    } catch let error as TraceError {
      throw traceFailure(error.description)
    } catch {
      throw traceFailure("\(error)")
    }
    if json {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      print(String(decoding: try encoder.encode(report), as: UTF8.self))
    } else {
      print(report.text, terminator: "")
    }
    if !report.ok { throw ExitCode(1) }
  }
}

/// Reports a trace command's failure on stderr and exits 2.
func traceFailure(_ reason: String) -> ExitCode {
  FileHandle.standardError.write(Data("hostnat trace: \(reason)\n".utf8))
  return ExitCode(2)
}
