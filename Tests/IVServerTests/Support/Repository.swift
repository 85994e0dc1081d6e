/// The repository root, found from this file's path
/// (Tests/IVServerTests/Support/Repository.swift).
let repositoryRoot: String = {
    var path = #filePath
    for _ in 0..<4 { path = String(path[..<path.lastIndex(of: "/")!]) }
    return path
}()
