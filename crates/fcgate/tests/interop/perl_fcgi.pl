# Perl FCGI (the C libfcgi underneath): `perl perl_fcgi.pl LISTEN WORKERS` where LISTEN is a
# unix socket path or ":PORT". WORKERS processes accept on the one socket, one connection each.
use strict;
use warnings;
use FCGI;
use Digest::MD5 qw(md5_hex);

my ($listen, $workers) = @ARGV;
my $socket = FCGI::OpenSocket($listen, 128) or die "cannot listen on $listen: $!";
for (2 .. $workers) { defined(my $pid = fork) or die "fork: $!"; last if $pid == 0 }
my %env;
my $request = FCGI::Request(\*STDIN, \*STDOUT, \*STDERR, \%env, $socket);

sub decode { my $s = shift // ''; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s }

while ($request->Accept() >= 0) {
    my %q = map { my ($k, $v) = split /=/, $_, 2; (decode($k), decode($v)) } split /&/, $env{QUERY_STRING} // '';
    my $op = $q{op} // '';
    if ($op eq 'echo') {
        print "Content-Type: text/plain\r\n\r\necho: $q{word}\n";
    } elsif ($op eq 'hash') {
        my ($body, $want) = ('', $env{CONTENT_LENGTH} || 0);
        while (length($body) < $want) { read(STDIN, $body, $want - length($body), length($body)) or last }
        printf "Content-Type: text/plain\r\n\r\nlength: %d\nmd5: %s\n", length($body), md5_hex($body);
    } elsif ($op eq 'big') {
        print "Content-Type: application/octet-stream\r\n\r\n", join('', map { sprintf "%015d\n", $_ } 0 .. $q{lines} - 1);
    } else {
        print "Status: 418 I'm a teapot\r\nX-Interop: perl-fcgi\r\nContent-Type: text/plain\r\n\r\nteapot\n";
    }
}
