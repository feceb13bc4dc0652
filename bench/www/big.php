<?php
// A 100 KiB response: how the gateway moves a body that spans several STDOUT records.
echo str_repeat("0123456789abcdef", 6400);
