<?php
// About 40 KB of ordinary HTML (a listing page, text varied as real text is), for the gateway to
// compress: the compressed scenario measures what gzip costs each gateway on a script's response.
$words = explode(' ', 'gateway request worker pool static file script response header cache '
    . 'client server queue timeout socket buffer stream page listing order account invoice '
    . 'customer product price stock shipping address payment status review comment author '
    . 'summary detail archive report export import setting profile session');
$rows = [];
for ($i = 1; $i <= 170; $i++) {
    $text = [];
    for ($w = 0; $w < 12; $w++) {
        $text[] = $words[($i * 7 + $w * 13 + $i * $w) % count($words)];
    }
    $price = number_format(($i * 7919) % 100000 / 100, 2);
    $rows[] = "<tr class=\"item\"><td class=\"id\">$i</td><td class=\"name\"><a href=\"/items/$i\">"
        . ucfirst($text[0]) . " $i</a></td><td class=\"desc\">" . implode(' ', $text)
        . "</td><td class=\"price\">$price</td></tr>";
}
echo "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>fcgate bench: compressed</title>",
    "<link rel=\"stylesheet\" href=\"/small.css\"></head>\n<body>\n<h1>Listing</h1>\n<table>\n",
    implode("\n", $rows), "\n</table>\n<p class=\"muted\">end of the listing</p>\n</body>\n</html>\n";
