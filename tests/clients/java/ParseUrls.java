// pgjdbc's own reading of a URL, `org.postgresql.Driver.parseURL`: one URL a line on stdin; for
// each, one line on stdout with the properties it yields, form-encoded (`k=v&k=v`, UTF-8), or
// `null` when pgjdbc refuses the URL. One process for a whole corpus
// (tests/clients/test_url_corpus.py). Run as a single-file program, like Connect.java.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.TreeSet;

public class ParseUrls {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        for (String url = in.readLine(); url != null; url = in.readLine()) {
            Properties props = org.postgresql.Driver.parseURL(url, new Properties());
            if (props == null) {
                out.println("null");
                continue;
            }
            List<String> pairs = new ArrayList<>();
            for (String key : new TreeSet<>(props.stringPropertyNames())) {
                pairs.add(URLEncoder.encode(key, StandardCharsets.UTF_8) + "="
                        + URLEncoder.encode(props.getProperty(key), StandardCharsets.UTF_8));
            }
            out.println(String.join("&", pairs));
        }
    }
}
