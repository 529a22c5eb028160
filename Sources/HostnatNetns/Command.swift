internal import Dispatch
internal import Foundation
internal import Glibc
internal import Synchronization

/// How a command ended.
public struct CommandResult: Sendable, Hashable, CustomStringConvertible {
  /// The program and its arguments, as run.
  public var arguments: [String]
  /// Exit status (128 + signal number when a signal ended it).
  public var status: Int32
  public var standardOutput: String
  public var standardError: String
  /// The command outlived its time limit and was killed.
  public var timedOut: Bool

  public var succeeded: Bool { status == 0 && !timedOut }

  public var description: String {
    let how = timedOut ? "timed out" : "exit \(status)"
    let err = standardError.trimmingCharacters(in: .whitespacesAndNewlines)
    return "\(arguments.joined(separator: " ")): \(how)\(err.isEmpty ? "" : ": \(err)")"
  }
}

/// Runs programs (`ip` and commands inside namespaces) with Foundation's `Process`: no shell, the
/// output collected, bounded in time.
public enum Command {
  /// Where programs are looked for after `PATH` (`ip` lives in /usr/sbin or /sbin, which a
  /// non-login `PATH` may lack).
  static let fallbackPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

  /// The absolute path of `program` (a name looked up in `PATH` then the usual system folders, or a
  /// path used as it is), or nil when it is not an executable file.
  public static func find(_ program: String) -> String? {
    if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
    let path = ProcessInfo.processInfo.environment["PATH"].map { $0.split(separator: ":").map(String.init) } ?? []
    for dir in path + fallbackPath where !dir.isEmpty {
      let candidate = dir + "/" + program
      var st = stat()
      if stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 { return candidate }
    }
    return nil
  }

  /// Runs `arguments[0]` with the rest as its arguments and waits at most `timeout` (then SIGTERM,
  /// and SIGKILL a second later). Throws only when it cannot start; a non-zero exit is in the result.
  public static func run(_ arguments: [String], timeout: Duration = .seconds(10)) throws(NetnsError) -> CommandResult {
    guard let program = arguments.first else { throw NetnsError(.notFound, "empty command") }
    guard let executable = find(program) else { throw NetnsError(.notFound, "\(program) is not installed (or not in PATH)") }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = Array(arguments.dropFirst())
    let outPipe = Pipe()
    let errPipe = Pipe()
    process.standardOutput = outPipe
    process.standardError = errPipe
    process.standardInput = FileHandle.nullDevice
    do {
      try process.run()
    } catch {
      throw NetnsError(.systemCall, "cannot start \(executable): \(error)")
    }
    // Drain both pipes while the command runs, so a chatty one cannot block on a full pipe.
    let collected = Collected()
    let readers = DispatchGroup()
    for (index, pipe) in [outPipe, errPipe].enumerated() {
      let handle = pipe.fileHandleForReading
      readers.enter()
      DispatchQueue.global().async {
        let data = handle.readDataToEndOfFile()
        collected.set(index, String(decoding: data, as: UTF8.self))
        readers.leave()
      }
    }
    let deadline = ContinuousClock.now + timeout
    var timedOut = false
    while process.isRunning {
      if ContinuousClock.now >= deadline {
        timedOut = true
        process.terminate()
        let grace = ContinuousClock.now + .seconds(1)
        while process.isRunning && ContinuousClock.now < grace { usleep(5_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        break
      }
      usleep(2_000)
    }
    process.waitUntilExit()
    // A grandchild that kept the pipe open must not hold us forever.
    _ = readers.wait(timeout: .now() + .seconds(2))
    let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    let (out, err) = collected.get()
    return CommandResult(arguments: arguments, status: status, standardOutput: out, standardError: err, timedOut: timedOut)
  }

  /// `run`, throwing `commandFailed` (or `timedOut`) unless the command exits 0.
  @discardableResult
  public static func check(_ arguments: [String], timeout: Duration = .seconds(10)) throws(NetnsError) -> CommandResult {
    let result = try run(arguments, timeout: timeout)
    guard result.succeeded else { throw NetnsError(result.timedOut ? .timedOut : .commandFailed, result.description) }
    return result
  }

  private final class Collected: Sendable {
    private let texts = Mutex<[String]>(["", ""])
    func set(_ index: Int, _ text: String) { texts.withLock { $0[index] = text } }
    func get() -> (String, String) { texts.withLock { ($0[0], $0[1]) } }
  }
}
