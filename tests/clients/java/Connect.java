// pgjdbc with the action's jdbc-url output (args[0]) and its user and password outputs
// (PGUSER and PGPASSWORD in the environment, as Flyway's -user/-password would take them):
// connect, run `select current_user` (or CLIENT_QUERY, after the statement CLIENT_SETUP, from the
// environment), print its value. On failure: the exception's class and
// message (and its causes) on stderr, exit 1. Run as a single-file program:
// `java -cp /usr/share/java/postgresql.jar Connect.java <jdbc-url>` (JDK 11+, or a JRE with the
// jdk.compiler module, as Debian's has).
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public class Connect {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.setProperty("user", System.getenv("PGUSER"));
        props.setProperty("password", System.getenv("PGPASSWORD"));
        props.setProperty("connectTimeout", "10");
        String setup = System.getenv("CLIENT_SETUP");
        String query = System.getenv().getOrDefault("CLIENT_QUERY", "select current_user");
        try (Connection conn = DriverManager.getConnection(args[0], props);
             Statement st = conn.createStatement()) {
            if (setup != null && !setup.isEmpty()) {
                st.execute(setup);
            }
            try (ResultSet rs = st.executeQuery(query)) {
                rs.next();
                System.out.println(rs.getString(1));
            }
        } catch (Exception e) {
            StringBuilder text = new StringBuilder();
            for (Throwable t = e; t != null; t = t.getCause()) {
                text.append(t.getClass().getName()).append(": ").append(t.getMessage()).append('\n');
            }
            System.err.print(text);
            System.exit(1);
        }
    }
}
