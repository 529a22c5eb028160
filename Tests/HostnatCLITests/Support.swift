import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Helpers for tests that run the built `hostnat` binary on loopback: find it, run it with a
/// time limit, keep one running in the background, pick a free port. Every wait is bounded.

/// What a finished run of the binary produced.
struct ProcessResult: Sendable {
  var exitCode: Int32
  var stdout: String
  var stderr: String
  /// The run hit its time limit and was killed.
  var timedOut: Bool
  /// Wall time of the run.
  var elapsed: Duration
}

enum SupportError: Error, CustomStringConvertible {
  case binaryNotFound([String])
  case timedOut(String)
  case exited(Int32, String)

  var description: String {
    switch self {
    case .binaryNotFound(let searched): "hostnat binary not found; looked in \(searched.joined(separator: ", ")) (set HOSTNAT_BINARY)"
    case .timedOut(let what): "timed out: \(what)"
    case .exited(let code, let stderr): "exited with \(code): \(stderr)"
    }
  }
}

enum Hostnat {
  /// The built binary: $HOSTNAT_BINARY, else `hostnat` in the build directory that holds this
  /// test bundle (.build/debug/hostnat), found by walking up from the test executable.
  static func binary() throws -> URL {
    if let path = ProcessInfo.processInfo.environment["HOSTNAT_BINARY"] {
      return URL(fileURLWithPath: path)
    }
    var searched: [String] = []
    let starts = [
      URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath(),
      Bundle.main.bundleURL.resolvingSymlinksInPath(),
      Bundle.main.executableURL?.resolvingSymlinksInPath(),
    ].compactMap { $0 }
    for start in starts {
      var directory = start.deletingLastPathComponent()
      for _ in 0..<5 {
        let candidate = directory.appendingPathComponent("hostnat")
        searched.append(candidate.path)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue,
          FileManager.default.isExecutableFile(atPath: candidate.path)
        {
          return candidate
        }
        directory = directory.deletingLastPathComponent()
      }
    }
    throw SupportError.binaryNotFound(searched)
  }

  /// Runs `hostnat ARGS` to completion or until `timeout`, then kills it.
  static func run(
    _ arguments: [String], timeout: Duration = .seconds(30), environment: [String: String]? = nil
  ) async throws -> ProcessResult {
    let process = try BackgroundProcess(arguments, environment: environment)
    let code = await process.waitForExit(timeout: timeout)
    if code == nil { process.kill() }
    _ = await process.waitForExit(timeout: .seconds(5))
    return ProcessResult(
      exitCode: code ?? -1, stdout: process.stdout, stderr: process.stderr, timedOut: code == nil,
      elapsed: ContinuousClock.now - process.started)
  }

  /// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it).
  static func freeLoopbackPort() throws -> Int {
    #if canImport(Glibc)
      let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
      let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { throw SupportError.exited(errno, "socket") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw SupportError.exited(errno, "bind") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw SupportError.exited(errno, "getsockname") }
    return Int(UInt16(bigEndian: address.sin_port))
  }
}

/// A `hostnat` process whose stdout and stderr go to files (no pipe can fill up and stall it).
/// Killed when released, so a failing test leaves nothing running.
final class BackgroundProcess: @unchecked Sendable {
  let process = Process()
  let outputURL: URL
  let errorURL: URL
  let started = ContinuousClock.now
  private let scratch: URL

  init(_ arguments: [String], environment: [String: String]? = nil) throws {
    scratch = FileManager.default.temporaryDirectory.appendingPathComponent("hostnat-proc-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    outputURL = scratch.appendingPathComponent("stdout")
    errorURL = scratch.appendingPathComponent("stderr")
    FileManager.default.createFile(atPath: outputURL.path, contents: nil)
    FileManager.default.createFile(atPath: errorURL.path, contents: nil)
    process.executableURL = try Hostnat.binary()
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env.removeValue(forKey: "HOSTNAT_CONTROLLER")
    for (key, value) in environment ?? [:] { env[key] = value }
    process.environment = env
    process.standardOutput = try FileHandle(forWritingTo: outputURL)
    process.standardError = try FileHandle(forWritingTo: errorURL)
    process.standardInput = FileHandle.nullDevice
    try process.run()
  }

  deinit {
    if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    try? FileManager.default.removeItem(at: scratch)
  }

  var pid: Int32 { process.processIdentifier }
  var stdout: String { (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "" }
  var stderr: String { (try? String(contentsOf: errorURL, encoding: .utf8)) ?? "" }
  var isRunning: Bool { process.isRunning }

  func signal(_ signal: Int32) { Foundation.kill(process.processIdentifier, signal) }
  func kill() { signal(SIGKILL) }

  /// The exit status (or 128+signal) once the process has ended, nil if it still runs after
  /// `timeout`.
  func waitForExit(timeout: Duration) async -> Int32? {
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
      if ContinuousClock.now >= deadline { return nil }
      try? await Task.sleep(for: .milliseconds(10))
    }
    return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
  }

  /// Waits for a stdout line starting with `prefix`; returns it. Fails when the process ends
  /// or `timeout` passes first.
  func waitForLine(prefix: String, timeout: Duration) async throws -> String {
    let deadline = ContinuousClock.now + timeout
    while true {
      if let line = stdout.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) { return String(line) }
      if !process.isRunning {
        throw SupportError.exited(process.terminationStatus, stderr)
      }
      if ContinuousClock.now >= deadline { throw SupportError.timedOut("no line \"\(prefix)...\"; stderr: \(stderr)") }
      try await Task.sleep(for: .milliseconds(20))
    }
  }
}

/// A temporary directory, removed when released.
final class TemporaryDirectory: @unchecked Sendable {
  let url: URL
  var path: String { url.path }

  init() throws {
    url = FileManager.default.temporaryDirectory.appendingPathComponent("hostnat-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  }

  deinit { try? FileManager.default.removeItem(at: url) }
}

/// `hostnat controller` on 127.0.0.1 with a port the OS picks, started and waited for.
final class ControllerProcess: @unchecked Sendable {
  let process: BackgroundProcess
  /// "127.0.0.1:PORT", from its ready line.
  let address: String
  let dataDirectory: String

  /// Starts a controller on `dataDirectory` and waits (bounded) for its ready line.
  init(dataDirectory: String, extraArguments: [String] = [], timeout: Duration = .seconds(30)) async throws {
    self.dataDirectory = dataDirectory
    process = try BackgroundProcess(
      ["controller", "--data-dir", dataDirectory, "--listen", "127.0.0.1:0", "--heartbeat-ms", "200"] + extraArguments)
    let line = try await process.waitForLine(prefix: "controller listening on ", timeout: timeout)
    // "controller listening on 127.0.0.1:PORT data-dir DIR"
    let fields = line.split(separator: " ")
    address = fields.count > 3 ? String(fields[3]) : ""
  }

  /// Runs an admin command against this controller.
  func cli(_ arguments: [String], timeout: Duration = .seconds(30)) async throws -> ProcessResult {
    try await Hostnat.run(arguments + ["--controller", address], timeout: timeout)
  }

  /// Runs an admin command with `--format json` and parses stdout; fails the test on error.
  func json(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> Any {
    let result = try await cli(arguments + ["--format", "json"])
    #expect(result.exitCode == 0, "\(arguments): \(result.stderr)", sourceLocation: sourceLocation)
    return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8), options: [.fragmentsAllowed])
  }

  /// SIGKILL, and wait for it to be gone.
  func kill() async {
    process.kill()
    _ = await process.waitForExit(timeout: .seconds(10))
  }

  deinit { if process.isRunning { process.kill() } }
}
