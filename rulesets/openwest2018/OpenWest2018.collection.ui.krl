ruleset OpenWest2018.collection.ui {
  meta {
    name "OpenWest 2018 game: Top Five Scores"
    description <<
      The leaderboard page of the collection pico: high_scores_page, queried as
      /sky/cloud/<leaderboard eci>/OpenWest2018.collection.ui/high_scores_page.html.
      Written for p2pico.
    >>
    author "p2pico"
    use module OpenWest2018.collection alias collection
    shares high_scores_page, top_five
  }

  global {
    esc = function(text) {
      text.defaultsTo("").as("String")
        .replace(re#&#g, "&amp;").replace(re#<#g, "&lt;")
        .replace(re#>#g, "&gt;").replace(re#"#g, "&quot;")
    }

    // The five best scores today, best first; ties by pin.
    top_five = function() {
      scores = collection:scores();
      members = collection:members();
      scores.keys()
        .sort(function(a, b) { scores{b} <=> scores{a} || a <=> b })
        .filter(function(pin) { scores{pin} > 0 })
        .slice(0, 4)
        .map(function(pin) {
          {"pin": pin, "initials": members{[pin, "initials"]}, "tagline": members{[pin, "tagline"]},
           "score": scores{pin}}
        })
    }

    row = function(entry, i) {
      <<<tr class="place#{i + 1}"><td class="rank">#{i + 1}</td><td class="pin">#{entry{"pin"}}</td>
<td class="initials">#{esc(entry{"initials"})}</td><td class="tagline">#{esc(entry{"tagline"})}</td>
<td class="score">#{entry{"score"}}</td></tr>
>>
    }

    past = function(w) {
      <<<li>Day #{w{"day"}}: <b>#{esc(w{"initials"})}</b> (#{w{"pin"}}) with #{w{"score"}}</li>
>>
    }

    high_scores_page = function() {
      top = top_five();
      winners = collection:winners();
      rows = top.length() == 0 => <<<tr><td colspan="5">No connections yet today</td></tr>
>> | top.map(row).join("");
      <<<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Top Five Scores</title>
<style>
body{font-family:sans-serif;margin:24px 40px;background:#fff}
h1{color:#7a1f5c;margin:0 0 4px 0;font-size:40px}
table{border-collapse:collapse;font-size:30px;margin-top:16px}
td{padding:8px 22px;border-bottom:2px solid #ddd}
td.rank{font-weight:bold;color:#7a1f5c}td.pin{font-family:monospace}
td.score{font-weight:bold;text-align:right}td.tagline{font-style:italic;color:#555;font-size:22px}
tr.place1{background:#ffd84d}tr.place2{background:#c9d3de}tr.place3{background:#e6a974}
tr.place4{background:#a9d8f5}tr.place5{background:#b5e6a5}
</style></head><body>
<h1>Top Five Scores</h1>
<div id="day">OpenWest 2018, day #{collection:day()} &middot; #{collection:attendees().keys().length()} players</div>
<table id="top">
#{rows}</table>
#{winners.length() > 0 => "<h2>Past winners</h2><ul>" + winners.map(past).join("") + "</ul>" | ""}
</body></html>
>>
    }
  }
}
