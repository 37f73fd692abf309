ruleset io.p2pico.bench.cpu {
  meta {
    name "CPU-heavy KRL functions for scripts/bench/krl.py"
    shares fib, mapFilterReduce, stringBuild
  }
  global {
    // Naive recursion: fib(20) makes 21,891 calls.
    fib = function(n) {
      n < 2 => n | fib(n - 1) + fib(n - 2)
    }
    // map, filter and reduce over n numbers (0 .. n-1).
    mapFilterReduce = function(n) {
      0.range(n - 1)
        .map(function(x) { x * 3 + 1 })
        .filter(function(x) { x % 2 == 0 })
        .reduce(function(a, b) { a + b }, 0)
    }
    // Builds a string of n comma-separated numbers, then splits and joins it.
    stringBuild = function(n) {
      s = 0.range(n - 1).reduce(function(acc, i) { acc + i.as("String") + "," }, "");
      parts = s.split(",");
      parts.join(";").length() + parts.length()
    }
  }
}
