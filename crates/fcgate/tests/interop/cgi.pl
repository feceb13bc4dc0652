#!/usr/bin/perl
# A CGI script for fcgiwrap, which forks it for every request; the same answers as perl_fcgi.pl.
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
binmode STDIN;
binmode STDOUT;

sub decode { my $s = shift // ''; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s }

my %q = map { my ($k, $v) = split /=/, $_, 2; (decode($k), decode($v)) } split /&/, $ENV{QUERY_STRING} // '';
my $op = $q{op} // '';
if ($op eq 'echo') {
    print "Content-Type: text/plain\r\n\r\necho: $q{word}\n";
} elsif ($op eq 'hash') {
    my ($body, $want) = ('', $ENV{CONTENT_LENGTH} || 0);
    while (length($body) < $want) { read(STDIN, $body, $want - length($body), length($body)) or last }
    printf "Content-Type: text/plain\r\n\r\nlength: %d\nmd5: %s\n", length($body), md5_hex($body);
} elsif ($op eq 'big') {
    print "Content-Type: application/octet-stream\r\n\r\n", join('', map { sprintf "%015d\n", $_ } 0 .. $q{lines} - 1);
} else {
    print "Status: 418 I'm a teapot\r\nX-Interop: fcgiwrap\r\nContent-Type: text/plain\r\n\r\nteapot\n";
}
