import HostnatAddressing
public import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HostnatPackets
import HostnatProto

/// The gcloud-style admin commands, as top-level subcommands of `hostnat`.
public enum AdminCLI {
  /// networks (with subnets), routers (with nats, get-status, get-nat-mapping-info),
  /// addresses, instances, hosts.
  public static var commands: [any ParsableCommand.Type] {
    [
      NetworksCommand.self, RoutersCommand.self, AddressesCommand.self, InstancesCommand.self, HostsCommand.self,
      FirewallRulesCommand.self, RoutesCommand.self, ProjectsCommand.self, ComputeCommand.self, RunCommand.self,
    ]
  }

  /// Where the CLI looks for the controller when `--controller` is not given.
  public static let defaultController = "127.0.0.1:7400"
  /// Environment variable that overrides `defaultController`.
  public static let controllerEnvironment = "HOSTNAT_CONTROLLER"
}

/// Options every admin command takes.
public struct GlobalOptions: ParsableArguments {
  @Option(help: "Controller address HOST:PORT (default \(AdminCLI.defaultController), or $\(AdminCLI.controllerEnvironment)).")
  var controller: String?

  @Option(help: "Output format: table, json or yaml.")
  var format: OutputFormat?

  public init() {}

  var controllerAddress: String {
    controller ?? ProcessInfo.processInfo.environment[AdminCLI.controllerEnvironment] ?? AdminCLI.defaultController
  }
}

extension OutputFormat: ExpressibleByArgument {}

/// One admin command's connection to the controller and its error reporting.
struct AdminSession {
  let command: String
  let global: GlobalOptions

  /// Calls are not queued while the controller is unreachable: a down controller is an error
  /// at once, and no call hangs longer than the timeout.
  static let callOptions: CallOptions = {
    var options = CallOptions.defaults
    options.waitForReady = false
    options.timeout = .seconds(15)
    return options
  }()

  /// Runs `body` with an admin client. Every failure becomes one `ERROR: (hostnat.COMMAND) ...`
  /// line on stderr and exit code 1.
  func run(_ body: (Hostnat_V1_AdminService.Client<HTTP2ClientTransport.Posix>) async throws -> Void) async throws {
    let address = global.controllerAddress
    do {
      let (host, port) = try Parse.controller(address)
      let transport = try HTTP2ClientTransport.Posix(
        target: .ipv4(address: host, port: port),
        transportSecurity: .plaintext,
        config: .defaults { config in
          config.backoff = .init(initial: .milliseconds(100), max: .milliseconds(500), multiplier: 1.6, jitter: 0.2)
        })
      try await withGRPCClient(transport: transport) { client in
        try await body(Hostnat_V1_AdminService.Client(wrapping: client))
      }
    } catch let error as CommandError {
      throw fail(error)
    } catch let error as RPCError {
      switch error.code {
      case .unavailable:
        throw fail(CommandError(.callFailed, "UNAVAILABLE: controller \(address) unreachable (\(error.message))", cause: error))
      case .deadlineExceeded:
        throw fail(CommandError(.callFailed, "DEADLINE_EXCEEDED: controller \(address) did not answer in time", cause: error))
      default:
        throw fail(CommandError(.callFailed, "\(Self.statusName(error.code)): \(error.message)", cause: error))
      }
    } catch let error as ExitCode {
      throw error
    } catch {
      throw fail(CommandError(.callFailed, "\(error)", cause: error))
    }
  }

  /// Prints the one error line; the caller throws the exit code (ArgumentParser then exits
  /// without printing more).
  func fail(_ error: CommandError) -> ExitCode {
    error.exit("ERROR: (hostnat.\(command))", status: 1)
  }

  /// Validates flags before connecting; a bad flag is reported like a refused call.
  func check<T>(_ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let error as CommandError {
      throw fail(error)
    }
  }

  /// gRPC's canonical status names, as grpc status codes are spelled in every language.
  static func statusName(_ code: RPCError.Code) -> String {
    switch code {
    case .cancelled: "CANCELLED"
    case .unknown: "UNKNOWN"
    case .invalidArgument: "INVALID_ARGUMENT"
    case .deadlineExceeded: "DEADLINE_EXCEEDED"
    case .notFound: "NOT_FOUND"
    case .alreadyExists: "ALREADY_EXISTS"
    case .permissionDenied: "PERMISSION_DENIED"
    case .resourceExhausted: "RESOURCE_EXHAUSTED"
    case .failedPrecondition: "FAILED_PRECONDITION"
    case .aborted: "ABORTED"
    case .outOfRange: "OUT_OF_RANGE"
    case .unimplemented: "UNIMPLEMENTED"
    case .internalError: "INTERNAL"
    case .unavailable: "UNAVAILABLE"
    case .dataLoss: "DATA_LOSS"
    case .unauthenticated: "UNAUTHENTICATED"
    default: "\(code)"
    }
  }
}

/// Syntax checks of flag values, each failing with the flag's name. Semantic checks (overlaps,
/// references, limits) are the controller's, so they are the same for every client.
enum Parse {
  static func controller(_ value: String) throws(CommandError) -> (String, Int) {
    do {
      let address = try SocketAddress.parse(value, flag: "--controller")
      return (address.host, Int(address.port))
    } catch {
      throw CommandError(flag: error.field, reason: error.reason)
    }
  }

  static func ipv4(_ text: String, flag: String) throws(CommandError) -> String {
    guard IPv4Address(text) != nil else { throw CommandError(flag: flag, reason: "\"\(text)\" is not an IPv4 address") }
    return text
  }

  /// "a.b.c.d/n" with no host bits set, as the proto requires. Stricter than `IPv4CIDR(text)`:
  /// the "/n" is required.
  static func cidr(_ text: String, flag: String) throws(CommandError) -> String {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2, let address = IPv4Address(parts[0]), parts[1].allSatisfy(\.isNumber), let length = Int(parts[1]),
      let range = IPv4CIDR(address, prefixLength: length)
    else {
      throw CommandError(flag: flag, reason: "\"\(text)\" is not a CIDR range (a.b.c.d/n)")
    }
    guard range.network == address else {
      throw CommandError(flag: flag, reason: "\"\(text)\" has host bits set")
    }
    return text
  }

  /// gcloud's duration syntax: plain seconds or a number with s, m, h or d.
  static func seconds(_ text: String, flag: String) throws(CommandError) -> UInt32 {
    let units: [Character: UInt64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    var digits = Substring(text)
    var unit: UInt64 = 1
    if let last = text.last, let factor = units[Character(last.lowercased())] {
      digits = text.dropLast()
      unit = factor
    }
    guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let number = UInt64(digits),
      number * unit <= UInt64(UInt32.max)
    else {
      throw CommandError(flag: flag, reason: "\"\(text)\" is not a duration (seconds, or a number followed by s, m, h or d)")
    }
    return UInt32(number * unit)
  }

  static func name(_ text: String, flag: String) throws(CommandError) -> String {
    guard !text.isEmpty else { throw CommandError(flag: flag, reason: "must not be empty") }
    return text
  }

  /// Comma-separated list of non-empty items.
  static func commaList(_ values: [String]) -> [String] {
    values.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }
  }

  /// "NAT_IP:PORT".
  static func natEndpoint(_ text: String) throws(CommandError) -> (String, UInt32) {
    guard let endpoint = SocketAddress(text), endpoint.port != 0 else {
      throw CommandError(flag: "NAT_IP:PORT", reason: "\"\(text)\" is not NAT_IP:PORT (e.g. 203.0.113.1:1024)")
    }
    return (endpoint.host, UInt32(endpoint.port))
  }

  /// RFC 3339 time or Unix milliseconds.
  static func time(_ text: String, flag: String) throws(CommandError) -> Int64 {
    if !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }), let ms = Int64(text) { return ms }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    formatter.formatOptions = [.withInternetDateTime]
    if let date = formatter.date(from: text) { return Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    throw CommandError(flag: flag, reason: "\"\(text)\" is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor Unix milliseconds")
  }
}

/// Unix ms as RFC 3339 (UTC), for tables.
func rfc3339(_ ms: Int64) -> String {
  guard ms > 0 else { return "-" }
  let formatter = ISO8601DateFormatter()
  formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
  return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}
